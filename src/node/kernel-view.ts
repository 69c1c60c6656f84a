/**
 * Views of the kernel with a few methods replaced (the local server's kernel: host pids for contained
 * processes, IPC statistics). Every other method is the kernel's own, bound ONCE here: the IPC hot path
 * (call, post, receiveAhead) must not pay a Proxy trap or a bind per call, and the kernel's methods must run
 * with the kernel itself as `this` (a derived object would shadow its fields on the first write).
 */
import type { KernelApi } from '../kernel/types.js';

/** `inner` with `overrides` in place of some of its methods. */
export function kernelWith(inner: KernelApi, overrides: Partial<KernelApi>): KernelApi {
  const view: Record<string, unknown> = {};
  const src = inner as unknown as Record<string, unknown>;
  const names = new Set<string>(Object.keys(src));
  for (
    let o: object | null = Object.getPrototypeOf(inner);
    o !== null && o !== Object.prototype;
    o = Object.getPrototypeOf(o)
  ) {
    for (const k of Object.getOwnPropertyNames(o)) names.add(k);
  }
  for (const k of names) {
    if (k === 'constructor') continue;
    const v = src[k];
    if (typeof v === 'function') view[k] = (v as (...a: unknown[]) => unknown).bind(inner);
  }
  Object.defineProperty(view, 'nodeId', { get: () => inner.nodeId, enumerable: true });
  Object.assign(view, overrides);
  return view as unknown as KernelApi;
}

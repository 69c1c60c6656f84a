/**
 * The DVK kernel: a pure state machine driven by the node daemon and by the simulator.
 * `new Kernel({ nodeId, io })`, then feed it events through {@link KernelApi}.
 */
export { Kernel, type KernelOptions } from './kernel.js';
export * from './types.js';
export { COPY_CHUNK, COPY_WINDOW } from './vcopy.js';

/**
 * Run trace: a running hash of every event (to assert that a seed replays exactly) and a ring of the most
 * recent lines (printed when an invariant fails, so the failing run can be read without re-running it).
 */
export class Trace {
  private h1 = 0x811c9dc5;
  private h2 = 0x01000193 ^ 0x5bd1e995;
  private readonly ring: string[] = [];
  private next = 0;
  /** Lines recorded so far. */
  lines = 0;

  constructor(private readonly keep = 200) {}

  /** Record one line (time is prefixed by the caller). */
  add(line: string): void {
    // Two independent 32-bit FNV-1a style hashes: cheap, deterministic, collisions irrelevant here.
    let a = this.h1;
    let b = this.h2;
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 13);
    }
    a = Math.imul(a ^ 10, 0x01000193);
    this.h1 = a >>> 0;
    this.h2 = b >>> 0;
    this.lines++;
    if (this.ring.length < this.keep) this.ring.push(line);
    else this.ring[this.next] = line;
    this.next = (this.next + 1) % this.keep;
  }

  /** Hash of everything recorded so far (hex). */
  hash(): string {
    return this.h1.toString(16).padStart(8, '0') + this.h2.toString(16).padStart(8, '0');
  }

  /** The most recent lines, oldest first. */
  tail(): string[] {
    if (this.ring.length < this.keep) return [...this.ring];
    return [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }
}

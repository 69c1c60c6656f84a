/**
 * Where the CLI writes: JSON for scripts, tables and colour for people. Colour and table borders only when
 * the stream is a TTY (picocolors also honours NO_COLOR / FORCE_COLOR).
 */
import Table from 'cli-table3';
import pc from 'picocolors';
import { DvsError } from '../protocol/errors.js';

/** The CLI's output streams. Tests and embedders may pass their own. */
export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  cwd: string;
}

export class Output {
  readonly io: Io;
  readonly colors: ReturnType<typeof pc.createColors>;
  readonly tty: boolean;

  constructor(io: Io) {
    this.io = io;
    this.tty = io.stdout.isTTY === true;
    this.colors = pc.createColors(this.tty && pc.isColorSupported);
  }

  /** One line on stdout. */
  line(s = ''): void {
    this.io.stdout.write(`${s}\n`);
  }

  /** Raw bytes on stdout (process output passed through). */
  raw(data: Uint8Array): void {
    this.io.stdout.write(data);
  }

  /** A value as JSON on stdout (one document, pretty-printed). */
  json(v: unknown): void {
    this.io.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
  }

  /** A note on stderr (progress, warnings): keeps stdout clean for pipes. */
  note(s: string): void {
    this.io.stderr.write(`${s}\n`);
  }

  /** A table; plain (no ANSI) when stdout is not a TTY. */
  table(head: string[], rows: (string | number)[][]): void {
    const t = new Table({
      head,
      style: this.tty ? { head: ['bold'], border: ['grey'] } : { head: [], border: [], compact: true },
      ...(this.tty
        ? {}
        : {
            chars: {
              top: '',
              'top-mid': '',
              'top-left': '',
              'top-right': '',
              bottom: '',
              'bottom-mid': '',
              'bottom-left': '',
              'bottom-right': '',
              left: '',
              'left-mid': '',
              mid: '',
              'mid-mid': '',
              right: '',
              'right-mid': '',
              middle: '  ',
            },
          }),
    });
    for (const r of rows) t.push(r.map(String));
    this.line(this.tty ? t.toString() : t.toString().replace(/^ /gm, '').replace(/ +$/gm, ''));
  }
}

/** The single line a failing command prints on stderr: `dvs: error: <message> (<CODE>)`. */
export function errorLine(e: unknown): string {
  const err = DvsError.from(e);
  const message = err.message.replace(/\s*\n\s*/g, ' ').trim();
  return `dvs: error: ${message} (${err.code})`;
}

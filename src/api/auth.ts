/**
 * The API's bearer token: created by `dvs up` (32 random bytes, hex) in `DIR/api-token` with mode 0600,
 * handed to each daemon as a file path (`--api-token-file`) or in `DVS_API_TOKEN`, and checked on every
 * `/api/` request in constant time.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { dvsError } from '../protocol/errors.js';

/** A fresh token: 32 random bytes as 64 hex characters. */
export function newToken(): string {
  return randomBytes(32).toString('hex');
}

/** Write `token` to `path`, readable by the owner only (0600 even if the file existed with wider bits). */
export async function writeTokenFile(path: string, token: string): Promise<void> {
  await writeFile(path, `${token}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
}

/** Read a token file (trimmed). EINVAL if it is empty or missing. */
export async function readTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw dvsError('EINVAL', `cannot read the API token file ${path}: ${(e as Error).message}`);
  }
  const token = text.trim();
  if (token.length < 16) throw dvsError('EINVAL', `the API token in ${path} is shorter than 16 characters`);
  return token;
}

/** The token of an `Authorization: Bearer <t>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/** Constant-time comparison of a presented token with the expected one. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  // Compare equal lengths only (timingSafeEqual throws otherwise); the length itself is not secret.
  return a.length === b.length && timingSafeEqual(a, b);
}

/** True for loopback peers (127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || /^(::ffff:)?127\./.test(address);
}

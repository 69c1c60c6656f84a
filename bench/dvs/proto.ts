/** Message types and sizes the dvs bench processes agree on. */
export const T_PING = 1;
export const T_START = 2;
export const T_DATA = 3;
export const T_DONE = 4;
export const T_GRANT = 5;
/** Payload of sendrec and post messages. */
export const MSG_BYTES = 64;
/** Size of one vcopy. */
export const VCOPY_BYTES = 1 << 20;

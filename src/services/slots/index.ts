/** SLOTS: fault-tolerant distributed slot allocation (docs/slots.md). */
export {
  decodeOwners,
  encodeOwners,
  initialOwners,
  SlotsMember,
  type SlotsParams,
  slotsParams,
} from './member.js';
export { type SlotsAllocateOptions, SlotsService, type SlotsServiceOptions } from './service.js';
export * from './types.js';

/** The REST API of a node daemon: see server.ts (docs/api.md for users). */

export type { ClusterView, DcRow, NodeRow } from '../node/views.js';
export { newToken, readTokenFile, writeTokenFile } from './auth.js';
export { type AdminCaller, type ApiNodes, apiNodes } from './caller.js';
export {
  type ApiRequestOptions,
  type ApiResponse,
  type ApiTrust,
  apiRequest,
  checkNodeIdentity,
  clusterTlsOptions,
  fetchPinnedCa,
} from './client.js';
export { type ApiErrorBody, httpStatus } from './errors.js';
export { type ApiOptions, ApiServer, type ApiTlsCredentials, buildApi, type EventFeed } from './server.js';

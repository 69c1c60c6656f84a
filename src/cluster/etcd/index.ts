/** The etcd backend of the cluster store (docs/etcd.md). */
export { EtcdStore, type EtcdStoreOptions } from './store.js';
export { ETCD_DEFAULT_PORT, parseEtcdUrl } from './url.js';

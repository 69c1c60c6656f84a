import { Kernel } from '../../../src/kernel/index.js';
import { ipcSuite } from './ipc-suite.js';

ipcSuite('real', (opts) => new Kernel(opts));

import { FakeKernel } from './fake-kernel.js';
import { ipcSuite } from './ipc-suite.js';

ipcSuite('fake', (opts) => new FakeKernel(opts));

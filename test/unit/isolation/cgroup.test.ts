import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { detectCgroups, parseCgroupMounts, parseKeyValues } from '../../../src/isolation/cgroup.js';
import { sanitizeHostname } from '../../../src/isolation/container.js';

/** /proc/self/mounts of the project's machines (Debian 12, hybrid: v1 controllers + a unified mount). */
const HYBRID = `tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`;
const MODERN = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n';
const COMOUNTED = 'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n';

describe('cgroup detection', () => {
  it('parses v1 hierarchies, co-mounted ones included, without name= hierarchies', () => {
    const m = parseCgroupMounts(HYBRID + COMOUNTED);
    assert.deepEqual(m.find((x) => x.path === '/sys/fs/cgroup/systemd')?.controllers, []);
    assert.deepEqual(m.find((x) => x.path === '/sys/fs/cgroup/cpu,cpuacct')?.controllers, ['cpu', 'cpuacct']);
    assert.equal(m.find((x) => x.fstype === 'cgroup2')?.path, '/sys/fs/cgroup/unified');
  });

  it('picks v1 on a hybrid host whose unified mount has no controllers', () => {
    const d = detectCgroups(HYBRID, () => 'hugetlb\n');
    assert.equal(d.kind, 'v1');
    assert.equal(d.v1.memory, '/sys/fs/cgroup/memory');
    assert.deepEqual(d.v2, { path: '/sys/fs/cgroup/unified', controllers: ['hugetlb'] });
    assert.match(d.reason, /unified \/sys\/fs\/cgroup\/unified has only \[hugetlb\]/);
  });

  it('picks v2 on a unified host with memory, cpu and pids', () => {
    const d = detectCgroups(MODERN, () => 'cpuset cpu io memory hugetlb pids rdma misc\n');
    assert.equal(d.kind, 'v2');
    assert.equal(d.v2?.path, '/sys/fs/cgroup');
  });

  it('says none when nothing usable is mounted', () => {
    assert.equal(detectCgroups(MODERN, () => 'hugetlb').kind, 'none');
    assert.equal(detectCgroups('proc /proc proc rw 0 0\n').kind, 'none');
  });

  it('reads key/value control files', () => {
    const oom = parseKeyValues('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n');
    assert.equal(oom.get('oom_kill'), 3);
    assert.equal(parseKeyValues('populated 1\nfrozen 0\n').get('frozen'), 0);
  });
});

describe('sanitizeHostname', () => {
  it('keeps hostnames within the DNS label rules', () => {
    assert.equal(sanitizeHostname('web_app-node 1'), 'web-app-node-1');
    assert.equal(sanitizeHostname('--x--'), 'x');
    assert.equal(sanitizeHostname('a'.repeat(80)).length, 63);
    assert.equal(sanitizeHostname('///'), 'dvs');
  });
});

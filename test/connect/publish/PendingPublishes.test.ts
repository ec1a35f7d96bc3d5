import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PendingPublish, PendingPublishes } from '../../../src/connect/publish/PendingPublishes';

function publish(topic: string): PendingPublish {
    return new PendingPublish(topic, 0, () => undefined, () => undefined, 1);
}

describe('PendingPublishes', () => {
    it('removes from the head, the middle and the tail, each once', () => {
        const list = new PendingPublishes();
        const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(publish);
        for (const p of [a, b, c, d]) list.add(p);
        assert.equal(list.size, 4);
        assert.equal(list.remove(d), true, 'head (the newest)');
        assert.equal(list.remove(b), true, 'middle');
        assert.equal(list.remove(a), true, 'tail (the oldest)');
        assert.equal(list.remove(b), false, 'a second time');
        assert.equal(list.remove(a), false);
        assert.equal(list.size, 1);
        assert.deepEqual(list.takeAll().map((p) => p.topic), ['c']);
        assert.equal(list.remove(c), false, 'after takeAll');
    });

    it('takes all, oldest first, and is empty and usable after', () => {
        const list = new PendingPublishes();
        const all = ['1', '2', '3'].map(publish);
        for (const p of all) list.add(p);
        assert.deepEqual(list.takeAll().map((p) => p.topic), ['1', '2', '3']);
        assert.equal(list.size, 0);
        assert.deepEqual(list.takeAll(), []);
        list.add(all[1]);
        assert.equal(list.size, 1);
        assert.equal(list.remove(all[0]), false, 'a publish taken before is not in the list');
        assert.equal(list.remove(all[1]), true);
        assert.equal(list.size, 0);
    });

    it('lists what it holds, oldest first, and keeps it', () => {
        const list = new PendingPublishes();
        const all = ['1', '2', '3'].map(publish);
        for (const p of all) list.add(p);
        list.remove(all[1]);
        assert.deepEqual(list.toArray().map((p) => p.topic), ['1', '3']);
        assert.equal(list.size, 2);
        assert.equal(list.remove(all[2]), true, 'still in the list after toArray');
    });
});

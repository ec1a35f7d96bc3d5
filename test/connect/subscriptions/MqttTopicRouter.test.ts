import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MqttTopicRouter } from '../../../src/connect/subscriptions/MqttTopicRouter';

function matches(filter: string, topic: string): boolean {
    const router = new MqttTopicRouter<string>();
    router.add(filter, 'x');
    return router.match(topic).length === 1;
}

describe('MqttTopicRouter', () => {
    it('matches exact filters only on the same topic', () => {
        assert.equal(matches('a/b', 'a/b'), true);
        assert.equal(matches('a/b', 'a/b/c'), false);
        assert.equal(matches('a/b', 'a'), false);
        assert.equal(matches('a/b', 'A/B'), false);
    });

    it("'+' matches exactly one level, an empty one too", () => {
        assert.equal(matches('sport/+/player1', 'sport/tennis/player1'), true);
        assert.equal(matches('sport/+', 'sport/tennis/player1'), false);
        assert.equal(matches('sport/+', 'sport/'), true);
        assert.equal(matches('sport/+', 'sport'), false);
        assert.equal(matches('+/+', '/finance'), true);
        assert.equal(matches('/+', '/finance'), true);
        assert.equal(matches('+', '/finance'), false);
    });

    it("'#' matches the parent and any number of levels", () => {
        assert.equal(matches('sport/#', 'sport'), true);
        assert.equal(matches('sport/#', 'sport/tennis/player1/ranking'), true);
        assert.equal(matches('sport/#', 'sports'), false);
        assert.equal(matches('#', 'any/thing/at/all'), true);
        assert.equal(matches('sport/+/#', 'sport/tennis'), true);
    });

    it("does not match '$' topics with a leading wildcard", () => {
        assert.equal(matches('#', '$SYS/broker/uptime'), false);
        assert.equal(matches('+/broker/uptime', '$SYS/broker/uptime'), false);
        assert.equal(matches('$SYS/#', '$SYS/broker/uptime'), true);
        assert.equal(matches('$SYS/broker/uptime', '$SYS/broker/uptime'), true);
        assert.equal(matches('$SYS/+/uptime', '$SYS/broker/uptime'), true);
    });

    it('returns each value once however many of its filters match', () => {
        const router = new MqttTopicRouter<string>();
        router.add('a/b', 'one');
        router.add('a/+', 'one');
        router.add('#', 'one');
        router.add('a/#', 'two');
        assert.deepEqual([...router.match('a/b')].sort(), ['one', 'two']);
    });

    it('removes routes, and removing twice does nothing', () => {
        const router = new MqttTopicRouter<string>();
        const r1 = router.add('a/+', 'one');
        const r2 = router.add('a/+', 'two');
        const r3 = router.add('a/b', 'three');
        assert.equal(router.size, 3);
        router.remove(r1);
        router.remove(r1);
        assert.deepEqual([...router.match('a/b')].sort(), ['three', 'two']);
        router.remove(r3);
        router.remove(r3);
        assert.deepEqual(router.match('a/b'), ['two']);
        router.remove(r2);
        assert.deepEqual(router.match('a/b'), []);
        assert.equal(router.size, 0);
    });

    it('never changes a result it returned: a listener removed while a message is dispatched still gets it', () => {
        const router = new MqttTopicRouter<string>();
        const one = router.add('a/b', 'one');
        router.add('a/b', 'two');
        router.add('a/b', 'one');
        const before = router.match('a/b');
        assert.deepEqual(before, ['one', 'two'], 'distinct values, in order of adding');
        assert.equal(router.match('a/b'), before, 'the same array while nothing changes (no allocation per message)');
        router.remove(one);
        router.add('a/b', 'three');
        assert.deepEqual(before, ['one', 'two'], 'the earlier result is untouched');
        assert.deepEqual(router.match('a/b'), ['two', 'one', 'three']);
        assert.ok(Object.isFrozen(before), 'frozen: a caller cannot change it either');
    });

    it('handles topics with many levels', () => {
        const deep = Array.from({ length: 500 }, (_, i) => `l${i}`).join('/');
        assert.equal(matches('l0/#', deep), true);
        assert.equal(matches(deep, deep), true);
    });

    it('matches among 100,000 filters without visiting the ones that cannot match', () => {
        const router = new MqttTopicRouter<number>();
        for (let i = 0; i < 50000; i++) router.add(`devices/${i}/state`, i);
        for (let i = 0; i < 50000; i++) router.add(`devices/${i}/+/temperature`, 100000 + i);
        assert.deepEqual(router.match('devices/42/state'), [42]);
        assert.deepEqual(router.match('devices/42/kitchen/temperature'), [100042]);
        assert.deepEqual(router.match('devices/nope/state'), []);
    });
});

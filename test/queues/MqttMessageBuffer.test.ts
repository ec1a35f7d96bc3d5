import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageBuffer } from '../../src/queues/MqttMessageBuffer';

const message = (text: string): MessageEnvelope => new MessageEnvelope('c', 't', text);
const texts = (messages: (MessageEnvelope | null)[]): (string | null)[] => messages.map((m) => m?.getMessageAsString() ?? null);

describe('MqttMessageBuffer', () => {
    it('keeps order across many pushes and shifts (with compaction)', () => {
        const buffer = new MqttMessageBuffer(100000);
        let next = 0;
        let expected = 0;
        for (let round = 0; round < 50; round++) {
            for (let i = 0; i < 300; i++) assert.ok(buffer.push(message(String(next++))));
            for (let i = 0; i < 250; i++) assert.equal(buffer.shift()?.getMessageAsString(), String(expected++));
            assert.equal(buffer.length, next - expected);
            assert.equal(buffer.peek(1)[0]?.getMessageAsString(), String(expected));
        }
        while (buffer.length > 0) assert.equal(buffer.shift()?.getMessageAsString(), String(expected++));
        assert.equal(expected, next);
        assert.equal(buffer.shift(), null);
    });

    it('refuses pushes beyond its limit and takes them again once there is room', () => {
        const buffer = new MqttMessageBuffer(2);
        assert.equal(buffer.push(message('a')), true);
        assert.equal(buffer.push(message('b')), true);
        assert.equal(buffer.push(message('c')), false);
        assert.deepEqual(texts(buffer.peek(10)), ['a', 'b']);
        buffer.shift();
        assert.equal(buffer.push(message('d')), true);
        assert.deepEqual(texts(buffer.peek(10)), ['b', 'd']);
        assert.equal(buffer.clear().length, 2);
        assert.equal(buffer.length, 0);
    });

    it('hands pushes to waiting takes in call order, and times out with null', async () => {
        const buffer = new MqttMessageBuffer(1);
        const first = buffer.take(10000);
        const second = buffer.take(10000);
        const third = buffer.take(20);
        assert.equal(buffer.waiting, 3);
        buffer.push(message('x'));
        buffer.push(message('y'));
        assert.deepEqual(texts(await Promise.all([first, second, third])), ['x', 'y', null]);
        assert.equal(buffer.waiting, 0);
        assert.equal(buffer.length, 0, 'messages given to waiters are not also buffered');
        // A full buffer still serves a waiter.
        buffer.push(message('kept'));
        const waiting = buffer.take(10000);
        assert.equal((await waiting)?.getMessageAsString(), 'kept');
    });

    it('take returns a buffered message at once, and null at once with no wait', async () => {
        const buffer = new MqttMessageBuffer(5);
        assert.equal(await buffer.take(0), null);
        buffer.push(message('m'));
        assert.equal((await buffer.take(0))?.getMessageAsString(), 'm');
    });

    it('releases waiting takes with null', async () => {
        const buffer = new MqttMessageBuffer(5);
        const waiting = [buffer.take(60000), buffer.take(60000)];
        buffer.releaseWaiters();
        assert.deepEqual(await Promise.all(waiting), [null, null]);
        assert.equal(buffer.push(message('later')), true);
        assert.equal(buffer.length, 1, 'released waiters take nothing');
    });
});

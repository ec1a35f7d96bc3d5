// MqttMessageQueue when calls race each other, the broker is down, or a shared connection changes under it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { delay, startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { CollectingReceiver, QueueFixture, within } from '../helpers/queues';

describe('MqttMessageQueue races and faults', { timeout: 60000 }, () => {
    const fixture = QueueFixture.use();
    const { cleanup } = fixture;
    const shared = fixture.shared.bind(fixture);
    const queueOn = fixture.queueOn.bind(fixture);

    // receive(waitTimeout) does not honour its timeout while the first SUBSCRIBE waits for a reconnect.
    it('receive(…, 200) resolves null within its timeout while the broker is down', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d1'));
        await queue.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        const result = await within(queue.receive(null, 200), 3000);
        assert.equal(result, null, 'receive(200) should resolve null, but it is still pending after 3 s');
    });

    // close() hangs while a SUBSCRIBE is pending (broker down, retry_connect on) – also with an owned connection.
    it('close() does not hang while the subscription waits for a reconnect (owned connection)', async () => {
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('connection.uri', fixture.broker.url, 'topic', uniqueTopic('d2'), 'options.reconnect_timeout', 100));
        cleanup.push(() => queue.close(null));
        await queue.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        const receiving = queue.receive(null, 100); // starts the (now pending) SUBSCRIBE
        receiving.catch(() => undefined);
        const closed = await within(queue.close(null), 3000);
        assert.notEqual(closed, 'timeout', 'close() is still pending after 3 s');
    });

    it('close() does not hang while the subscription waits for a reconnect (shared connection)', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d2b'));
        await queue.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        queue.listen(null, new CollectingReceiver()); // starts the (now pending) SUBSCRIBE
        const closed = await within(queue.close(null), 3000);
        assert.notEqual(closed, 'timeout', 'close() is still pending after 3 s');
    });

    it('close() ends an autosubscribing open() that waits for a reconnect (shared connection)', async () => {
        const { connection, references } = shared();
        await connection.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        const queue = queueOn(references, uniqueTopic('d2c'), 'options.autosubscribe', true);
        const opening = queue.open(null);
        opening.catch(() => undefined);
        await delay(100);
        const closed = await within(queue.close(null), 3000);
        assert.notEqual(closed, 'timeout', 'close() is still pending after 3 s');
        assert.notEqual(await within(opening.catch(() => 'rejected'), 100), 'timeout', 'open() is still pending');
    });

    // endListen() does not cancel a beginListen() that has not started yet.
    it('beginListen() then endListen(): nothing is delivered to the receiver', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d3'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        const receiver = new CollectingReceiver();
        queue.beginListen(null, receiver);
        queue.endListen(null);
        await queue.send(null, new MessageEnvelope('c', 't', 'm'));
        await delay(300);
        assert.deepEqual(receiver.got, [], 'the receiver got messages after endListen()');
        assert.equal(await queue.readMessageCount(), 1);
    });

    // a receiver stuck on one message blocks every later receiver, even after endListen()/close()/reopen.
    it('after endListen(), a new receiver is not blocked forever by the old one', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d4'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        let stuckCalls = 0;
        queue.listen(null, { receiveMessage: () => { stuckCalls++; return new Promise<void>(() => undefined); } }); // never settles
        await queue.send(null, new MessageEnvelope('c', 't', 'stuck'));
        await waitFor(() => stuckCalls === 1, 5000, 'the first message taken');
        queue.endListen(null);
        await queue.close(null);
        await queue.open(null);
        const receiver = new CollectingReceiver();
        queue.listen(null, receiver);
        await queue.send(null, new MessageEnvelope('c', 't', 'next'));
        await delay(500);
        assert.deepEqual(receiver.got, ['next'], 'the new receiver never gets a message');
    });

    // MQTT.js has acknowledged a message that arrives once close() has started: the queue keeps it.
    it('keeps a message that arrives during close() for the reopen', async () => {
        const { connection, references } = shared();
        const topic = uniqueTopic('d5');
        // Another component on the same connection and topic; it happens to close the queue as the message comes in.
        let queue: MqttMessageQueue | null = null;
        let closing: Promise<void> | null = null;
        await connection.open(null);
        await connection.subscribe(topic, { qos: 1 }, { onMessage: () => { closing ??= queue!.close(null); } });
        queue = queueOn(references, topic, 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        await connection.publish(topic, 'arrives during close', { qos: 1 });
        await waitFor(() => closing != null, 5000, 'the message');
        await closing!;
        await queue.open(null);
        assert.equal(await queue.readMessageCount(), 1);
        assert.equal((await queue.receive(null, 0))?.getMessageAsString(), 'arrives during close');
    });

    // The shared connection's close dropped the queue's subscription: the queue reports closed
    // until it is opened again, and then subscribes again and keeps its receiver.
    it('reports closed after its shared connection was reopened by its owner, and listens again once reopened', async () => {
        const { connection, references } = shared();
        const queue = queueOn(references, uniqueTopic('d6'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        const receiver = new CollectingReceiver();
        queue.listen(null, receiver);
        await connection.close(null);
        await connection.open(null); // e.g. the container / another component reopens it
        assert.equal(queue.isOpen(), false, 'the subscription is gone: not open');
        await assert.rejects(queue.send(null, new MessageEnvelope('c', 't', 'lost')), { code: 'MQTT_NOT_OPENED' });
        await queue.open(null);
        assert.equal(queue.isOpen(), true);
        await queue.send(null, new MessageEnvelope('c', 't', 'after reopen'));
        await delay(500);
        assert.deepEqual(receiver.got, ['after reopen']);
    });

    // the owned connection is configured once; configure() before a reopen does not reach it.
    it('configure() before a reopen reaches the owned connection', async () => {
        const other = await startAedes();
        cleanup.push(() => other.stop());
        const queue = new MqttMessageQueue('q');
        cleanup.push(() => queue.close(null));
        queue.configure(ConfigParams.fromTuples('connection.uri', fixture.broker.url, 'topic', uniqueTopic('d7')));
        await queue.open(null);
        await queue.close(null);
        queue.configure(ConfigParams.fromTuples('connection.uri', other.url, 'topic', uniqueTopic('d7')));
        await queue.open(null);
        assert.equal(other.broker.clientCount(), 1, 'the reopened queue still connects to the first broker');
    });

    // sendAsObject() with a value JSON cannot encode throws a bare TypeError, without a code.
    it('sendAsObject() with an unencodable value fails with a stable code', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('d8'));
        await queue.open(null);
        const circular: Record<string, unknown> = {};
        circular.self = circular;
        for (const bad of [circular, 10n, () => 1]) {
            await assert.rejects(queue.sendAsObject('cid', 't', bad), (err: { code?: string }) => {
                assert.equal(typeof err.code, 'string', `no code: ${(err as Error).message}`);
                return true;
            });
        }
    });
});

// MqttMessageQueue while its broker is down or restarts: receive() keeps its timeout, close() does not hang, no timer or rejection is left behind, delivery resumes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import { CollectingReceiver, QueueFixture, within } from '../helpers/queues';

describe('MqttMessageQueue while the broker is down or restarts', { timeout: 60000 }, () => {
    const fixture = QueueFixture.use();
    const { cleanup } = fixture;
    const shared = fixture.shared.bind(fixture);
    const queueOn = fixture.queueOn.bind(fixture);

    // MQTT.js keeps one client across automatic reconnects: isOpen() must stay true and the
    // queue must get messages again after a broker restart.
    for (const kind of ['shared', 'owned'] as const) {
        it(`stays open and receives again after a broker restart (${kind} connection)`, async () => {
            const topic = uniqueTopic('r5');
            let queue: MqttMessageQueue;
            if (kind === 'shared') {
                queue = queueOn(shared().references, topic, 'options.autosubscribe', true, 'options.qos', 1);
            } else {
                queue = new MqttMessageQueue('q');
                queue.configure(ConfigParams.fromTuples('connection.uri', fixture.broker.url, 'topic', topic, 'options.reconnect_timeout', 100,
                    'options.autosubscribe', true, 'options.qos', 1));
                cleanup.push(() => queue.close(null));
            }
            await queue.open(null);
            await fixture.broker.restart();
            await delay(500);
            assert.equal(queue.isOpen(), true, 'not open after the reconnect');
            await waitFor(() => fixture.broker.broker.clientCount() >= 1, 5000, 'the reconnect');
            await delay(200); // resubscription
            await queue.send(null, new MessageEnvelope('c', 't', 'after restart'));
            const m = await queue.receive(null, 3000);
            assert.equal(m?.getMessageAsString(), 'after restart');
        });
    }

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

    // receive() whose subscription waits for a reconnect, then close(): no timer of receive() survives.
    it('no receive() timer survives close() (subscription waiting for a reconnect)', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r6'));
        await queue.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
        const base = timers();
        const receiving = queue.receive(null, 600000);
        await delay(50);
        const peeking = queue.peek(null);
        await queue.close(null);
        assert.equal(await receiving, null);
        assert.equal(await peeking, null);
        await delay(50);
        assert.ok(timers() <= base, `timers before ${base}, after close ${timers()}`);
    });

    // receive() times out while its subscription waits for a reconnect; the owner then closes
    // the shared connection, which rejects the subscription: that rejection must be handled.
    it('receive() timing out, then the subscription fails: no unhandled rejection', async () => {
        const unhandled: unknown[] = [];
        const onUnhandled = (r: unknown) => { unhandled.push(r); };
        process.on('unhandledRejection', onUnhandled);
        cleanup.push(() => { process.off('unhandledRejection', onUnhandled); return Promise.resolve(); });
        const { connection, references } = shared();
        const queue = queueOn(references, uniqueTopic('r7'));
        await queue.open(null);
        await fixture.broker.stop();
        cleanup.push(() => fixture.broker.restart());
        await delay(100);
        assert.equal(await queue.receive(null, 100), null);
        assert.equal(await queue.peek(null), null);
        await connection.close(null); // rejects the pending SUBSCRIBE with MQTT_CLOSED
        await delay(100);
        assert.deepEqual(unhandled, []);
        assert.equal(queue.isOpen(), false);
        await queue.close(null);
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
});

// MqttMessageQueue: reopen cycles, close/open interleavings, receivers replaced mid-delivery, broker restarts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope, type IMessageQueue, type IMessageReceiver } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { delay, startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { QueueFixture } from '../helpers/queues';

describe('MqttMessageQueue interleavings and reopen cycles', { timeout: 60000 }, () => {
    const fixture = QueueFixture.use();
    const { cleanup } = fixture;
    const shared = fixture.shared.bind(fixture);
    const queueOn = fixture.queueOn.bind(fixture);

    // localConnection() calls configure()+setReferences() on every open; CompositeLogger/
    // CompositeCounters.setReferences() append, so each reopen adds the logger and counters again.
    it('reopening an owned-connection queue does not multiply the connection\'s counters and log lines', async () => {
        const { references, logger, counters } = testReferences();
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('connection.uri', fixture.broker.url, 'topic', uniqueTopic('r1')));
        queue.setReferences(references);
        cleanup.push(() => queue.close(null));
        for (let i = 0; i < 3; i++) { await queue.open(null); await queue.close(null); }
        await queue.open(null);
        const before = logger.entries.length;
        await queue.send(null, new MessageEnvelope('c', 't', 'one'));
        assert.equal(counters.increments.get('mqtt.published_messages'), 1, 'one publish counted more than once');
        assert.equal(counters.timings.get('mqtt.publish_time'), 1, 'one publish timed more than once');
        await queue.close(null);
        const closedLines = logger.messages().slice(before).filter((m) => m.startsWith('Closed MQTT connection'));
        assert.equal(closedLines.length, 1, `"Closed MQTT connection" logged ${closedLines.length} times`);
    });

    // CredentialResolver.configure() appends too: a credential changed by configure() before a
    // reopen does not reach the owned connection (the first one is still used).
    it('configure() with a new credential before a reopen reaches the owned connection', async () => {
        const users: (string | undefined)[] = [];
        const authBroker = await startAedes({ authenticate: (_id, username) => { users.push(username); return true; } });
        cleanup.push(() => authBroker.stop());
        const queue = new MqttMessageQueue('q');
        cleanup.push(() => queue.close(null));
        const topic = uniqueTopic('r2');
        queue.configure(ConfigParams.fromTuples('connection.uri', authBroker.url, 'topic', topic, 'credential.username', 'old', 'credential.password', 'p'));
        await queue.open(null);
        await queue.close(null);
        queue.configure(ConfigParams.fromTuples('connection.uri', authBroker.url, 'topic', topic, 'credential.username', 'new', 'credential.password', 'p'));
        await queue.open(null);
        assert.deepEqual(users, ['old', 'new']);
    });

    // close(); open(); close() issued together: the second close() joins the first (SharedRun),
    // the open() waits for that close and then opens: the queue ends open, with its own client.
    it('close(); open(); close() leaves the queue closed (owned connection)', async () => {
        const queue = new MqttMessageQueue('q');
        queue.configure(ConfigParams.fromTuples('connection.uri', fixture.broker.url, 'topic', uniqueTopic('r3')));
        cleanup.push(() => queue.close(null));
        await queue.open(null);
        const c1 = queue.close(null);
        const o = queue.open(null);
        const c2 = queue.close(null);
        await Promise.allSettled([c1, o, c2]);
        assert.equal(queue.isOpen(), false, 'the last call was close(), yet the queue is open');
        await delay(100);
        assert.equal(fixture.broker.broker.clientCount(), 0, 'the owned MQTT client is still connected');
    });

    it('close(); open(); close() leaves an MqttConnection closed', async () => {
        const { connection } = shared();
        await connection.open(null);
        const c1 = connection.close(null);
        const o = connection.open(null);
        const c2 = connection.close(null);
        await Promise.allSettled([c1, o, c2]);
        assert.equal(connection.isOpen(), false, 'the last call was close(), yet the connection is open');
    });

    // listen() twice with the same receiver while a message is being handled: a second drain
    // starts, and the receiver gets the next message before it finished the previous one.
    it('listen(r) twice: r still gets its messages one at a time, in order', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r4'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        let active = 0;
        let maxActive = 0;
        const done: string[] = [];
        const receiver: IMessageReceiver = {
            receiveMessage: async (m: MessageEnvelope, _q: IMessageQueue) => {
                active++; maxActive = Math.max(maxActive, active);
                await delay(m.getMessageAsString() === 'm1' ? 300 : 10);
                done.push(m.getMessageAsString());
                active--;
            },
        };
        queue.listen(null, receiver);
        for (const m of ['m1', 'm2', 'm3']) await queue.send(null, new MessageEnvelope('c', 't', m));
        await waitFor(() => active === 1, 2000, 'm1 being handled');
        queue.listen(null, receiver); // e.g. a restart of the consumer, or beginListen() after listen()
        await waitFor(() => done.length === 3, 3000, 'all three messages');
        assert.equal(maxActive, 1, 'the receiver was handed a message while still handling another');
        assert.deepEqual(done, ['m1', 'm2', 'm3']);
    });

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

    // listen(A) then listen(B) while A handles m1: after endListen() nothing reaches A but m1.
    it('listen(A), listen(B): A gets nothing after being replaced; B gets the rest in order', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r8'), 'options.autosubscribe', true, 'options.qos', 1);
        await queue.open(null);
        const a: string[] = []; const b: string[] = [];
        let releaseA!: () => void;
        queue.listen(null, { receiveMessage: async (m: MessageEnvelope) => { a.push(m.getMessageAsString()); await new Promise<void>((r) => { releaseA = r; }); } });
        for (const m of ['m1', 'm2', 'm3']) await queue.send(null, new MessageEnvelope('c', 't', m));
        await waitFor(() => a.length === 1, 2000, 'm1 to A');
        queue.listen(null, { receiveMessage: (m: MessageEnvelope) => { b.push(m.getMessageAsString()); return Promise.resolve(); } });
        await waitFor(() => b.length === 2, 2000, 'B');
        releaseA();
        await queue.send(null, new MessageEnvelope('c', 't', 'm4'));
        await delay(200);
        assert.deepEqual(a, ['m1']);
        assert.deepEqual(b, ['m2', 'm3', 'm4']);
    });

    // open() right after close(), close() right after open(), on a shared connection.
    it('open/close interleavings end in the state of the last call', async () => {
        const { references } = shared();
        const queue = queueOn(references, uniqueTopic('r9'), 'options.autosubscribe', true);
        await queue.open(null);
        await Promise.allSettled([queue.close(null), queue.open(null)]);
        assert.equal(queue.isOpen(), true, 'close(); open(): not open');
        await Promise.allSettled([queue.open(null), queue.close(null)]);
        assert.equal(queue.isOpen(), false, 'open(); close(): open');
        await Promise.allSettled([queue.open(null), queue.close(null), queue.open(null)]);
        assert.equal(queue.isOpen(), true, 'open(); close(); open(): not open');
        await queue.send(null, new MessageEnvelope('c', 't', 'x'));
        assert.equal((await queue.receive(null, 2000))?.getMessageAsString(), 'x');
    });
});

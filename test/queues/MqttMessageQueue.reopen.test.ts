// MqttMessageQueue opened and closed again: reopen cycles, close/open calls that overlap, configure() before a reopen, a shared connection reopened by its owner.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { delay, startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { CollectingReceiver, QueueFixture } from '../helpers/queues';

describe('MqttMessageQueue reopen cycles and overlapping open/close', { timeout: 60000 }, () => {
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
});

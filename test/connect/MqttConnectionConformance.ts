// The connection conformance fixture: publish and subscribe as every MqttConnection user relies on, run against one broker.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { IPublishPacket, Packet } from 'mqtt';
import { BadRequestException, InvalidStateException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { type IMqttMessageListener, type MqttConnection, MqttErrorCode } from '../../src';
import { type TestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

function delay(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Records the SUBSCRIBE and UNSUBSCRIBE packets a connection sends. */
function packetLog(connection: MqttConnection): Packet[] {
    const sent: Packet[] = [];
    connection.getConnection()!.on('packetsend', (packet: Packet) => {
        if (packet.cmd === 'subscribe' || packet.cmd === 'unsubscribe') sent.push(packet);
    });
    return sent;
}

/** Where a broker departs from MQTT 3.1.1 in what this suite checks, and where to report it. */
export interface ConformanceDeviations {
    /**
     * A filter subscribed again at a higher QoS keeps its old subscription too (RabbitMQ 3.10),
     * so each message comes once per QoS; MQTT 3.1.1 (3.8.4) says the new one replaces it. The
     * test then checks for that and reports what it saw here.
     */
    raisedQosKeepsOldSubscription?: (evidence: string) => void;
}

/**
 * Registers the connection conformance suite for a broker.
 * @param label       the broker's name in the test titles.
 * @param start       starts a broker for the suite (stopped after it).
 * @param skip        a reason to skip, or false.
 * @param deviations  what the broker does otherwise than MQTT says, known and checked.
 */
export function describeConnectionConformance(
    label: string, start: () => Promise<TestBroker>, skip: string | false, deviations: ConformanceDeviations = {},
): void {
    describe(`MqttConnection publish and subscribe (${label})`, { skip, timeout: 60000 }, () => {
        let broker: TestBroker;
        let sub: MqttConnection;
        let pub: MqttConnection;
        let refs: ReturnType<typeof testReferences>;

        before(async () => {
            broker = await start();
            refs = testReferences();
            sub = newConnection(broker.url);
            sub.setReferences(refs.references);
            pub = newConnection(broker.url);
            pub.setReferences(refs.references);
            await sub.open(null);
            await pub.open(null);
        });
        after(async () => {
            await sub?.close(null);
            await pub?.close(null);
            await broker?.stop();
        });

        it('delivers on exact and wildcard filters with MQTT semantics', async (t) => {
            const base = uniqueTopic('wild');
            const exact = new RecordingListener();
            const plus = new RecordingListener();
            const hash = new RecordingListener();
            // One connection per filter: a broker may send one copy per matching subscription of a
            // client (NATS does), and a PUBLISH does not say which subscription it is for.
            const plusSub = newConnection(broker.url);
            const hashSub = newConnection(broker.url);
            await plusSub.open(null);
            await hashSub.open(null);
            t.after(async () => {
                await plusSub.close(null);
                await hashSub.close(null);
            });
            await sub.subscribe(`${base}/a/b`, null, exact);
            await plusSub.subscribe(`${base}/+/b`, { qos: 1 }, plus);
            await hashSub.subscribe(`${base}/#`, { qos: 1 }, hash);
            for (const t of ['a/b', 'x/b', 'a/b/c', 'a', '']) {
                await pub.publish(t === '' ? base : `${base}/${t}`, t, { qos: 1 });
            }
            await waitFor(() => hash.received.length === 5, 5000, 'all five messages on #');
            await delay(50);
            assert.deepEqual(exact.topics(), [`${base}/a/b`]);
            assert.deepEqual(plus.topics().sort(), [`${base}/a/b`, `${base}/x/b`]);
            assert.deepEqual(hash.topics().sort(), [base, `${base}/a`, `${base}/a/b`, `${base}/a/b/c`, `${base}/x/b`].sort());
            await sub.unsubscribe(`${base}/a/b`, exact);
        });

        it('keeps payload bytes exactly, and passes the packet', async () => {
            const topic = uniqueTopic('raw');
            const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x7b, 0x22, 0x80, 0x0a, 0xc3]);
            const got: { data: Buffer; packet: IPublishPacket }[] = [];
            const listener: IMqttMessageListener = { onMessage: (_t, data, packet) => { got.push({ data, packet }); } };
            await sub.subscribe(topic, { qos: 1 }, listener);
            await pub.publish(topic, bytes, { qos: 1 });
            await pub.publish(topic, 'héllo', { qos: 0 });
            await pub.publish(topic, Buffer.alloc(0), { qos: 1 });
            await waitFor(() => got.length === 3, 5000, 'three messages');
            // MQTT orders messages per topic and QoS only: the QoS 0 one may overtake (NATS does).
            const [binary, text, empty] = [got.filter((g) => g.data.length === 8), got.filter((g) => g.data.length === 6), got.filter((g) => g.data.length === 0)];
            assert.equal(binary.length, 1);
            assert.deepEqual(binary[0].data, bytes);
            assert.equal(binary[0].packet.qos, 1);
            assert.equal(text.length, 1);
            assert.equal(text[0].data.toString('utf8'), 'héllo');
            assert.equal(empty.length, 1);
            await sub.unsubscribe(topic, listener);
        });

        it('sends one SUBSCRIBE per filter at the highest QoS, and one UNSUBSCRIBE after the last listener', async () => {
            const topic = `${uniqueTopic('shared')}/+`;
            const sent = packetLog(sub);
            const a = new RecordingListener();
            const b = new RecordingListener();
            const c = new RecordingListener();
            await Promise.all([sub.subscribe(topic, { qos: 0 }, a), sub.subscribe(topic, { qos: 0 }, b)]);
            await sub.subscribe(topic, { qos: 1 }, c);
            await sub.subscribe(topic, { qos: 0 }, a);
            const subscribes = sent.filter((p) => p.cmd === 'subscribe');
            assert.equal(subscribes.length, 2, 'one for the filter, one to raise its QoS');
            assert.deepEqual(subscribes.map((p) => p.cmd === 'subscribe' && p.subscriptions[0].qos), [0, 1]);

            await pub.publish(topic.replace('+', 'x'), 'm', { qos: 1 });
            const report = deviations.raisedQosKeepsOldSubscription;
            // The broker's copies: one, or with the deviation one per QoS the filter was subscribed at.
            const copies = report ? 2 : 1;
            await waitFor(() => [a, b, c].every((l) => l.received.length === copies), 5000, `${copies} copies each`);
            await delay(100);
            assert.equal(a.received.length, copies, 'a listener subscribed twice receives each copy once');
            if (report) {
                assert.deepEqual(c.received.map((m) => m.qos).sort(), [0, 1]);
                report('a filter subscribed at QoS 0, then again at QoS 1 (one SUBSCRIBE each), delivers each message twice, ' +
                    'at QoS 0 and at QoS 1: the broker keeps the first subscription beside the second (MQTT 3.1.1, 3.8.4: it replaces it). ' +
                    'Subscribe a filter at its highest QoS first.');
            }

            await sub.unsubscribe(topic, a);
            await sub.unsubscribe(topic, b);
            assert.equal(sent.filter((p) => p.cmd === 'unsubscribe').length, 0);
            await sub.unsubscribe(topic, c);
            await sub.unsubscribe(topic, c);
            assert.equal(sent.filter((p) => p.cmd === 'unsubscribe').length, 1);
            assert.equal(sub.getSubscriptions().length, 0);

            await pub.publish(topic.replace('+', 'y'), 'gone', { qos: 1 });
            await delay(100);
            assert.equal(c.received.length, copies, 'no delivery after unsubscribe');
        });

        it('isolates listeners that throw or reject, and logs them', async () => {
            const topic = uniqueTopic('isolate');
            const good = new RecordingListener();
            await sub.subscribe(topic, null, { onMessage: () => { throw new Error('listener broke'); } });
            await sub.subscribe(topic, null, { onMessage: () => Promise.reject(new Error('listener rejected')) });
            await sub.subscribe(topic, null, good);
            await pub.publish(topic, '1');
            await pub.publish(topic, '2');
            await waitFor(() => good.received.length === 2, 5000, 'the good listener to get both');
            await waitFor(() => refs.logger.entries.filter((e) => e.level === LogLevel.Error && /listener failed/.test(e.message)).length >= 4,
                5000, 'four listener errors logged');
            assert.equal(sub.getConnection()!.connected, true);
        });

        it('rejects bad input with typed errors and never mutates options', async () => {
            const listener = new RecordingListener();
            const subscriptionsBefore = sub.getSubscriptions().length;
            const badRequests: [Promise<void>, string][] = [
                [pub.publish('', 'x'), MqttErrorCode.InvalidTopic],
                [pub.publish('a/+', 'x'), MqttErrorCode.InvalidTopic],
                [pub.publish('a/#', 'x'), MqttErrorCode.InvalidTopic],
                [pub.publish('a\u0000', 'x'), MqttErrorCode.InvalidTopic],
                [pub.publish('a', 42 as unknown as string), MqttErrorCode.InvalidPayload],
                [pub.publish('a', { a: 1 } as unknown as string), MqttErrorCode.InvalidPayload],
                [pub.publish('a', null as unknown as string), MqttErrorCode.InvalidPayload],
                [pub.publish('a', 'x', { qos: 3 as 0 }), MqttErrorCode.InvalidQos],
                [pub.publish('a', 'x', { qos: '1' as unknown as 0 }), MqttErrorCode.InvalidQos],
                [pub.publish('a', 'x', { qos: 0, retain: 'yes' as unknown as boolean }), MqttErrorCode.InvalidOptions],
                [pub.publish('a', 'x', 'fast' as unknown as { qos: 0 }), MqttErrorCode.InvalidOptions],
                [sub.subscribe('a/#/b', null, listener), MqttErrorCode.InvalidFilter],
                [sub.subscribe('a+', null, listener), MqttErrorCode.InvalidFilter],
                [sub.subscribe('', null, listener), MqttErrorCode.InvalidFilter],
                [sub.subscribe('$share/g', null, listener), MqttErrorCode.InvalidFilter],
                [sub.subscribe('a', { qos: -1 as 0 }, listener), MqttErrorCode.InvalidQos],
                [sub.subscribe('a', null, {} as IMqttMessageListener), MqttErrorCode.InvalidListener],
                [sub.subscribe('a', null, null as unknown as IMqttMessageListener), MqttErrorCode.InvalidListener],
            ];
            for (const [promise, code] of badRequests) {
                await assert.rejects(promise, (err: BadRequestException) => {
                    assert.ok(err instanceof BadRequestException, `${code}: ${String(err)}`);
                    assert.equal(err.code, code);
                    return true;
                });
            }
            assert.equal(sub.getSubscriptions().length, subscriptionsBefore, 'no entry left by a rejected subscribe');

            const topic = uniqueTopic('frozen');
            const subscribeOptions = Object.freeze({ qos: 1 as const });
            const publishOptions = Object.freeze({ qos: 1 as const, retain: false, properties: Object.freeze({}) });
            await sub.subscribe(topic, subscribeOptions, listener);
            await pub.publish(topic, 'x', publishOptions);
            await waitFor(() => listener.received.length === 1, 5000, 'the message');
            assert.deepEqual(subscribeOptions, { qos: 1 });
            assert.deepEqual(publishOptions, { qos: 1, retain: false, properties: {} });
            await sub.unsubscribe(topic, listener);
        });

        it('delivers retained messages to a new subscription', async () => {
            const topic = uniqueTopic('retained');
            await pub.publish(topic, 'kept', { qos: 1, retain: true });
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await waitFor(() => listener.received.length === 1, 5000, 'the retained message');
            assert.equal(listener.received[0].retain, true);
            await pub.publish(topic, '', { qos: 1, retain: true });
            await sub.unsubscribe(topic, listener);
        });

        it('counts published and received messages and times publishes', async () => {
            const topic = uniqueTopic('count');
            const listener = new RecordingListener();
            const published = refs.counters.increments.get('mqtt.published_messages') ?? 0;
            const received = refs.counters.increments.get('mqtt.received_messages') ?? 0;
            const timed = refs.counters.timings.get('mqtt.publish_time') ?? 0;
            await sub.subscribe(topic, { qos: 1 }, listener);
            for (let i = 0; i < 5; i++) await pub.publish(topic, String(i), { qos: 1 });
            await waitFor(() => listener.received.length === 5, 5000, 'five messages');
            assert.equal(refs.counters.increments.get('mqtt.published_messages'), published + 5);
            assert.equal(refs.counters.increments.get('mqtt.received_messages'), received + 5);
            assert.equal(refs.counters.timings.get('mqtt.publish_time'), timed + 5);
            await sub.unsubscribe(topic, listener);
        });

        it('rejects publish and subscribe before open and after close', async () => {
            const connection = newConnection(broker.url);
            const listener = new RecordingListener();
            await assert.rejects(connection.publish('a', 'x'), (err: InvalidStateException) =>
                err instanceof InvalidStateException && err.code === MqttErrorCode.NotOpened);
            await assert.rejects(connection.subscribe('a', null, listener), { code: MqttErrorCode.NotOpened });
            await connection.open(null);
            await connection.subscribe('a', null, listener);
            await connection.close(null);
            assert.equal(connection.getSubscriptions().length, 0, 'close drops subscriptions');
            await assert.rejects(connection.publish('a', 'x'), { code: MqttErrorCode.NotOpened });
            await connection.unsubscribe('a', listener);
        });
    });
}

// The feature rows of the broker matrix: each test is one cell's proof (see matrixBrokers.ts).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { IPublishPacket } from 'mqtt';
import { ConnectionException, UnsupportedException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import { type CapturingLogger, newConnection, RecordingListener, rejection, testReferences, uniqueClientId } from '../helpers/components';
import { recordUnsupported } from './evidence';
import { cellTitle, type Feature, MATRIX_BROKERS, type MatrixTestBroker } from './matrixBrokers';

const USER = 'matrix';
const PASSWORD = 'matrix-secret';

for (const broker of MATRIX_BROKERS) {
    describe(`[${broker.id}] Broker matrix features: ${broker.name}`, { skip: broker.skip, timeout: 300_000 }, () => {
        let server: MatrixTestBroker;
        const opened: MqttConnection[] = [];
        /** Each connection's log, for the messages of failed assertions. */
        const logs = new Map<MqttConnection, CapturingLogger>();
        const logOf = (connection: MqttConnection): string => logs.get(connection)?.text() ?? '';

        before(async () => { server = await broker.start({ passwords: { [USER]: PASSWORD } }); });
        after(async () => {
            for (const connection of opened.reverse()) await connection.close(null).catch(() => undefined);
            await server?.cleanup();
        });

        /** A connection with the broker's credentials and a fast reconnect, opened, closed after the suite. */
        async function open(...tuples: unknown[]): Promise<MqttConnection> {
            const connection = newConnection(server.url, 'credential.username', USER, 'credential.password', PASSWORD,
                'options.reconnect_timeout', 200, 'options.max_reconnect_timeout', 1000, 'options.connect_timeout', 10000, ...tuples);
            const refs = testReferences();
            connection.setReferences(refs.references);
            logs.set(connection, refs.logger);
            opened.push(connection);
            await connection.open(null);
            return connection;
        }

        /** Registers a test in a cell; `lacking` runs instead when the broker lacks the feature. */
        function cell(feature: Feature, title: string, supported: () => Promise<void>, lacking?: () => Promise<string>): void {
            if (!broker.lacks.has(feature)) {
                it(cellTitle(broker, feature, title), supported);
                return;
            }
            assert.ok(lacking, `${broker.id} lacks ${feature}: the test of how the module reports it is missing`);
            it(cellTitle(broker, feature, `${title}: the broker lacks it, and the module says so`), async () => {
                recordUnsupported(broker, feature, await lacking());
            });
        }

        /** Publishes `count` messages at `qos` and checks they arrive once each, in order, at that QoS. */
        async function roundTrip(qos: 0 | 1 | 2, count: number): Promise<void> {
            const sub = await open();
            const pub = await open();
            const topic = uniqueTopic(`qos${qos}`);
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos }, listener);
            for (let i = 0; i < count; i++) await pub.publish(topic, `m${i}`, { qos });
            await waitFor(() => listener.received.length >= count, 10000, `${count} messages at QoS ${qos}`);
            await delay(200);
            assert.deepEqual(listener.received.map((m) => m.data.toString()), Array.from({ length: count }, (_, i) => `m${i}`));
            assert.ok(listener.received.every((m) => m.qos === qos), `delivered at QoS ${qos}`);
        }

        cell('qos0', 'publish and receive at QoS 0', () => roundTrip(0, 20));
        cell('qos1', 'publish and receive at QoS 1, in order', () => roundTrip(1, 50));
        cell('qos2', 'publish and receive at QoS 2, exactly once', () => roundTrip(2, 50), async () => {
            const sub = await open();
            const pub = await open();
            const topic = uniqueTopic('qos2');
            const listener = new RecordingListener();
            const subscribeError = await rejection(sub.subscribe(topic, { qos: 2 }, listener));
            assert.ok(subscribeError instanceof ConnectionException);
            assert.equal(subscribeError.code, MqttErrorCode.QosNotGranted);
            assert.equal(subscribeError.details.getAsInteger('granted_qos'), 1);
            assert.equal(sub.getSubscriptions().length, 0, 'the listener was not added');
            await sub.subscribe(topic, { qos: 1 }, listener);

            const started = Date.now();
            const publishError = await rejection(pub.publish(topic, 'exactly once?', { qos: 2 }));
            assert.ok(publishError instanceof UnsupportedException);
            assert.equal(publishError.code, MqttErrorCode.QosNotSupported);
            const seconds = ((Date.now() - started) / 1000).toFixed(1);
            const again = await rejection(pub.publish(topic, 'again', { qos: 2 }));
            assert.equal(again.code, MqttErrorCode.QosNotSupported, 'refused at once from then on');
            assert.equal(again.details.getAsInteger('max_qos'), 1);

            // The connection stays usable at QoS 1, and nothing is sent again behind the caller's back.
            await pub.publish(topic, 'at qos 1', { qos: 1 });
            await waitFor(() => listener.received.some((m) => m.data.toString() === 'at qos 1'), 10000, 'the QoS 1 message');
            await delay(500);
            assert.ok(pub.isConnected(), 'connected');
            const bodies = listener.received.map((m) => m.data.toString());
            assert.ok(!bodies.includes('again'), 'a refused publish is not sent');
            const delivered = publishError.details.getAsString('delivered');
            assert.equal(bodies.includes('exactly once?'), delivered === 'at_least_once',
                `the error's details.delivered (${String(delivered)}) tells whether the broker took it`);
            return `SUBSCRIBE at QoS 2: ${subscribeError.message}. PUBLISH at QoS 2 (${seconds} s): ${publishError.message}`;
        });

        cell('retained', 'a retained message reaches a later subscriber, and an empty one clears it', async () => {
            const pub = await open();
            const topic = uniqueTopic('retained');
            await pub.publish(topic, 'kept', { qos: 1, retain: true });
            const first = new RecordingListener();
            const sub = await open();
            await sub.subscribe(topic, { qos: 1 }, first);
            await waitFor(() => first.received.length === 1, 10000, 'the retained message');
            assert.equal(first.received[0].data.toString(), 'kept');
            assert.equal(first.received[0].retain, true);
            await pub.publish(topic, '', { qos: 1, retain: true });
            const later = new RecordingListener();
            const sub2 = await open();
            await sub2.subscribe(topic, { qos: 1 }, later);
            await pub.publish(topic, 'live', { qos: 1 });
            await waitFor(() => later.received.length >= 1, 10000, 'the live message');
            await delay(200);
            assert.deepEqual(later.received.map((m) => m.data.toString()), ['live'], 'nothing retained after the clear');
        });

        cell('wildcards', 'exact, + and # filters get exactly their topics', async () => {
            // One connection per filter: a broker may send a client one copy per matching subscription (NATS does).
            const [exactSub, plusSub, hashSub, pub] = [await open(), await open(), await open(), await open()];
            const base = uniqueTopic('wild');
            const exact = new RecordingListener();
            const plus = new RecordingListener();
            const hash = new RecordingListener();
            await exactSub.subscribe(`${base}/a/b`, { qos: 1 }, exact);
            await plusSub.subscribe(`${base}/+/b`, { qos: 1 }, plus);
            await hashSub.subscribe(`${base}/#`, { qos: 1 }, hash);
            const topics = ['a/b', 'x/b', 'a/b/c', 'a', ''].map((t) => (t ? `${base}/${t}` : base));
            for (const topic of topics) await pub.publish(topic, 'w', { qos: 1 });
            await waitFor(() => hash.received.length === topics.length, 10000, 'every message on #');
            await delay(200);
            assert.deepEqual(exact.topics(), [`${base}/a/b`]);
            assert.deepEqual(plus.topics().sort(), [`${base}/a/b`, `${base}/x/b`]);
            assert.deepEqual(hash.topics().sort(), [...topics].sort(), '# matches the parent level too');
        });

        /** Two members of a $share group and a plain subscriber; 20 messages to the topic. */
        async function shareGroup(): Promise<{ filter: string; group: { member: string; body: string }[]; plain: RecordingListener; granted: number[] }> {
            const [a, b, plainSub, pub] = [await open(), await open(), await open(), await open()];
            const topic = uniqueTopic('shared');
            const filter = `$share/workers/${topic}`;
            const group: { member: string; body: string }[] = [];
            const granted: number[] = [];
            for (const [name, connection] of [['a', a], ['b', b]] as const) {
                connection.getConnection()!.on('packetreceive', (packet) => { if (packet.cmd === 'suback') granted.push(...packet.granted.map(Number)); });
                await connection.subscribe(filter, { qos: 1 }, { onMessage: (_t: string, data: Buffer) => { group.push({ member: name, body: data.toString() }); } });
            }
            const plain = new RecordingListener();
            await plainSub.subscribe(topic, { qos: 1 }, plain);
            for (let i = 0; i < 20; i++) await pub.publish(topic, `s${i}`, { qos: 1 });
            await waitFor(() => plain.received.length >= 20, 10000, '20 messages to the plain subscriber');
            await delay(500);
            return { filter, group, plain, granted };
        }

        cell('shared', 'members of a $share group split the messages, each delivered once', async () => {
            const { group } = await shareGroup();
            assert.deepEqual(group.map((g) => g.body).sort(), Array.from({ length: 20 }, (_, i) => `s${i}`).sort(), 'each message once');
            assert.ok(group.some((g) => g.member === 'a') && group.some((g) => g.member === 'b'), 'both members get messages');
        }, async () => {
            const { group, plain, granted } = await shareGroup();
            assert.equal(plain.received.length, 20);
            assert.equal(group.length, 0, 'the group gets nothing');
            // MQTT 3.1.1 has no way to say so: the SUBACK grants the filter, as a plain topic filter.
            return `SUBACK granted QoS ${granted.join(' and ')} for $share/workers/<topic>, then 0 of 20 messages ` +
                'published to <topic> reached the two members of the group, while a plain subscriber got all 20: the broker takes ' +
                '$share/... as a plain topic filter. MQTT 3.1.1 gives the module no way to tell.';
        });

        cell('persistent', 'a persistent session keeps QoS 1 messages sent while the client was away', async () => {
            const clientId = uniqueClientId('mx');
            const topic = uniqueTopic('session');
            const first = await open('client_id', clientId, 'options.clean_session', false);
            await first.subscribe(topic, { qos: 1 }, new RecordingListener());
            await first.close(null);
            const pub = await open();
            for (let i = 0; i < 5; i++) await pub.publish(topic, `p${i}`, { qos: 1 });
            const listener = new RecordingListener();
            const second = await open('client_id', clientId, 'options.clean_session', false);
            await second.subscribe(topic, { qos: 1 }, listener);
            await waitFor(() => listener.received.length >= 5, 10000, 'the five messages kept by the session');
            assert.deepEqual(listener.received.map((m) => m.data.toString()), ['p0', 'p1', 'p2', 'p3', 'p4']);
            await second.unsubscribe(topic, listener);
        });

        cell('mqtt5', 'MQTT 5: user properties and a message expiry make the round trip', async () => {
            const sub = await open('options.protocol_version', 5);
            const pub = await open('options.protocol_version', 5);
            const topic = uniqueTopic('v5');
            const packets: IPublishPacket[] = [];
            await sub.subscribe(topic, { qos: 1 }, { onMessage: (_t, _d, packet) => { packets.push(packet); } });
            await pub.publish(topic, 'v5', { qos: 1, properties: { userProperties: { origin: 'matrix' }, messageExpiryInterval: 60 } });
            await waitFor(() => packets.length === 1, 10000, 'the MQTT 5 message');
            assert.deepEqual({ ...packets[0].properties?.userProperties }, { origin: 'matrix' });
        }, async () => {
            const connection = newConnection(server.url, 'credential.username', USER, 'credential.password', PASSWORD,
                'options.protocol_version', 5, 'options.connect_timeout', 5000);
            connection.setReferences(testReferences().references);
            const started = Date.now();
            const error = await rejection(connection.open(null));
            const seconds = ((Date.now() - started) / 1000).toFixed(1);
            assert.ok(error instanceof ConnectionException, `a ConnectionException, not ${error.name}`);
            const expected = broker.mqtt5Refusal;
            assert.ok(expected, `${broker.id} lacks MQTT 5: say how open() fails (mqtt5Refusal)`);
            assert.equal(error.code, expected.code, error.message);
            if (expected.reasonCode !== undefined) assert.equal(error.details.getAsInteger('reason_code'), expected.reasonCode);
            assert.equal(connection.isOpen(), false, 'open() failed whole: no client left reconnecting');
            return `open() with options.protocol_version 5 failed after ${seconds} s: ${error.code}: ${error.message}`;
        });

        cell('will', 'the will is published when a client dies, not when it closes', async () => {
            const watcher = await open();
            const topic = uniqueTopic('will');
            const listener = new RecordingListener();
            await watcher.subscribe(topic, { qos: 1 }, listener);
            const polite = await open('options.will_topic', topic, 'options.will_message', 'polite', 'options.will_qos', 1);
            await polite.close(null);
            const dying = await open('options.will_topic', topic, 'options.will_message', 'gone', 'options.will_qos', 1,
                'options.retry_connect', false);
            dying.getConnection()!.stream.destroy();
            await waitFor(() => listener.received.length >= 1, 15000, 'the will message');
            await delay(300);
            assert.deepEqual(listener.received.map((m) => m.data.toString()), ['gone'], 'only the dead client\'s will');
        });

        cell('restart', 'subscriptions and QoS 1 publishes survive a broker restart', async () => {
            const sub = await open('options.clean_session', false, 'client_id', uniqueClientId('mr'));
            const pub = await open();
            const topic = uniqueTopic('restart');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await pub.publish(topic, 'before', { qos: 1 });
            await waitFor(() => listener.received.length === 1, 10000, 'the first message');
            await server.restart();
            const during = pub.publish(topic, 'after', { qos: 1 });
            await waitFor(() => sub.isConnected() && pub.isConnected(), 60000, 'both connections back');
            await during;
            // QoS 1 is at least once: 'before' may come again after the restart (Aedes sends it again at times).
            await waitFor(() => listener.received.some((m) => m.data.toString() === 'after'), 15000, 'the message published across the restart')
                .catch((err: Error) => assert.fail(`${err.message}\n--- subscriber log ---\n${logOf(sub)}\n--- publisher log ---\n${logOf(pub)}`));
            assert.deepEqual(listener.received.map((m) => m.data.toString()).filter((b, i, all) => all.indexOf(b) === i), ['before', 'after']);
        });

        cell('auth', 'bad or missing credentials fail open() with the CONNACK code; good ones open', async () => {
            for (const [label, tuples] of [
                ['a bad password', ['credential.username', USER, 'credential.password', 'wrong']],
                ['no credentials', []],
            ] as const) {
                const connection = newConnection(server.url, 'options.connect_timeout', 10000, ...tuples);
                connection.setReferences(testReferences().references);
                const error = await rejection(connection.open(null));
                assert.equal(error.code, MqttErrorCode.ConnectRefused, `${label}: ${error.message}`);
                assert.ok([4, 5, 0x86, 0x87].includes(error.details.getAsInteger('reason_code')), `${label}: reason code ${String(error.details.getAsInteger('reason_code'))}`);
                assert.equal(connection.isOpen(), false);
            }
            const good = await open();
            assert.ok(good.isConnected());
        });
    });
}

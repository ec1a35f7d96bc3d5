// Brokers without QoS 2 or other features: the module says so with typed errors instead of
// degrading in silence, or sending the same publish again after every reconnect.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';

import type * as mqttPacket from 'mqtt-packet';
import { ConfigException, ConnectionException, UnsupportedException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { delay, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { RecordingListener, rejection, testReferences } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';

describe('MqttConnection and what the broker supports', { timeout: 60000 }, () => {
    it('checks options.max_qos and the will options', async (t) => {
        const f = fixture(t);
        for (const [tuples, key] of [
            [['options.max_qos', 3], 'options.max_qos'],
            [['options.max_qos', 'one'], 'options.max_qos'],
            [['options.will_message', 'bye'], 'options.will_message'],
            [['options.will_qos', 1], 'options.will_qos'],
            [['options.will_topic', 'a/#'], 'options.will_topic'],
            [['options.will_topic', 'a', 'options.will_qos', 3], 'options.will_qos'],
            [['options.will_topic', 'a', 'options.will_retain', 'maybe'], 'options.will_retain'],
        ] as const) {
            const connection = f.connection('mqtt://127.0.0.1:1', ...tuples);
            const error = await rejection(connection.open(null));
            assert.ok(error instanceof ConfigException, `${key}: ${error.message}`);
            assert.equal(error.code, MqttErrorCode.BadOption);
            assert.equal(error.details.getAsString('key'), key);
        }
    });

    it('options.max_qos refuses publishes and subscribes above it before sending anything', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.max_qos', 1);
        await connection.open(null);
        const sent: string[] = [];
        connection.getConnection()!.on('packetsend', (packet) => { sent.push(packet.cmd); });
        const topic = uniqueTopic('maxqos');
        const publishError = await rejection(connection.publish(topic, 'x', { qos: 2 }));
        assert.ok(publishError instanceof UnsupportedException);
        assert.equal(publishError.code, MqttErrorCode.QosNotSupported);
        assert.equal(publishError.details.getAsString('source'), 'options.max_qos');
        assert.equal(publishError.details.getAsInteger('max_qos'), 1);
        assert.equal(connection.getStatus().maxQos, 1);
        const subscribeError = await rejection(connection.subscribe(topic, { qos: 2 }, new RecordingListener()));
        assert.equal(subscribeError.code, MqttErrorCode.QosNotSupported);
        assert.deepEqual(sent, [], 'nothing was sent');
        assert.equal(connection.getSubscriptions().length, 0);
        const listener = new RecordingListener();
        await connection.subscribe(topic, { qos: 1 }, listener);
        await connection.publish(topic, 'y', { qos: 1 });
        await waitFor(() => listener.received.length === 1, 5000, 'the QoS 1 message');
    });

    it('the will is published when the connection dies, with its QoS and retain flag', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const topic = uniqueTopic('will');
        const dying = f.connection(broker.url, 'options.will_topic', topic, 'options.will_message', 'gone',
            'options.will_qos', 1, 'options.will_retain', true, 'options.retry_connect', false);
        await dying.open(null);
        dying.getConnection()!.stream.destroy();
        await delay(300);
        const watcher = f.connection(broker.url);
        await watcher.open(null);
        const listener = new RecordingListener();
        await watcher.subscribe(topic, { qos: 1 }, listener);
        await waitFor(() => listener.received.length === 1, 5000, 'the retained will');
        assert.equal(listener.received[0].data.toString(), 'gone');
        assert.equal(listener.received[0].retain, true);
        await dying.close(null);
    });

    describe('Mosquitto with max_qos 1', { skip: mosquittoSkip() }, () => {
        it('a SUBACK granting QoS 1 for QoS 2 fails that subscribe with MQTT_QOS_NOT_GRANTED; QoS 1 listeners of the filter stay', async (t) => {
            const f = fixture(t);
            const broker = await f.mosquitto({ extraConfig: ['max_qos 1'] });
            const connection = f.connection(broker.url);
            await connection.open(null);
            const topic = uniqueTopic('granted');
            const low = new RecordingListener();
            const high = new RecordingListener();
            const [lowResult, highResult] = await Promise.allSettled([
                connection.subscribe(topic, { qos: 1 }, low),
                connection.subscribe(topic, { qos: 2 }, high),
            ]);
            assert.equal(lowResult.status, 'fulfilled');
            assert.equal(highResult.status, 'rejected');
            const error = (highResult).reason as ConnectionException;
            assert.ok(error instanceof ConnectionException);
            assert.equal(error.code, MqttErrorCode.QosNotGranted);
            assert.equal(error.details.getAsInteger('qos'), 2);
            assert.equal(error.details.getAsInteger('granted_qos'), 1);
            assert.deepEqual(connection.getSubscriptions().map((s) => s.qos), [1], 'only the QoS 1 listener is left');
            await connection.publish(topic, 'm', { qos: 1 });
            await waitFor(() => low.received.length === 1, 5000, 'the message');
            assert.equal(high.received.length, 0);
        });

        it('MQTT 3.1.1: the broker closing the connection on each QoS 2 publish fails it with MQTT_QOS_NOT_SUPPORTED, no endless resend', async (t) => {
            const f = fixture(t);
            const broker = await f.mosquitto({ extraConfig: ['max_qos 1'] });
            const refs = testReferences();
            const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
            connection.setReferences(refs.references);
            await connection.open(null);
            const topic = uniqueTopic('closes');
            const listener = new RecordingListener();
            await connection.subscribe(topic, { qos: 1 }, listener);
            let publishes = 0;
            connection.getConnection()!.on('packetsend', (packet) => { if (packet.cmd === 'publish' && packet.qos === 2) publishes++; });
            assert.equal(connection.getStatus().maxQos, 2, 'nothing known yet');
            const error = await rejection(connection.publish(topic, 'exactly once', { qos: 2 }));
            assert.ok(error instanceof UnsupportedException);
            assert.equal(error.code, MqttErrorCode.QosNotSupported);
            assert.equal(error.details.getAsString('source'), 'broker_closed');
            assert.equal(error.details.getAsString('delivered'), 'no');
            assert.equal(connection.getStatus().maxQos, 1);
            assert.equal(publishes, 2, 'sent, and sent again once after the reconnect');
            await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
            await delay(500);
            assert.equal(publishes, 2, 'not sent again');
            assert.equal((await rejection(connection.publish(topic, 'again', { qos: 2 }))).details.getAsString('source'), 'broker_closed');
            await connection.publish(topic, 'qos 1', { qos: 1 });
            await waitFor(() => listener.received.length === 1, 5000, 'the QoS 1 message');
            assert.equal(listener.received[0].data.toString(), 'qos 1');
            assert.ok(refs.logger.entries.some((e) => e.level === LogLevel.Error && /takes no QoS 2/.test(e.message)), 'logged');
        });

        it('MQTT 5: the CONNACK maximum QoS refuses QoS 2 publishes before sending', async (t) => {
            const f = fixture(t);
            const broker = await f.mosquitto({ extraConfig: ['max_qos 1'] });
            const connection = f.connection(broker.url, 'options.protocol_version', 5);
            await connection.open(null);
            const error = await rejection(connection.publish(uniqueTopic('v5'), 'x', { qos: 2 }));
            assert.equal(error.code, MqttErrorCode.QosNotSupported);
            assert.equal(error.details.getAsString('source'), 'connack');
            assert.ok(connection.isConnected());
        });
    });

    it('a QoS 2 publish answered with PUBACK (RabbitMQ 3.x) fails with MQTT_QOS_NOT_SUPPORTED, delivered at least once', async (t) => {
        const f = fixture(t);
        const broker = await f.scripted((packet: mqttPacket.Packet, send) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            if (packet.cmd === 'publish' && packet.qos > 0) send({ cmd: 'puback', messageId: packet.messageId });
        });
        const connection = f.connection(broker.url);
        await connection.open(null);
        const error = await rejection(connection.publish('t', 'x', { qos: 2 }));
        assert.ok(error instanceof UnsupportedException);
        assert.equal(error.details.getAsString('source'), 'puback');
        assert.equal(error.details.getAsString('delivered'), 'at_least_once');
        assert.equal(connection.getStatus().maxQos, 1);
        assert.match(error.message, /at least once/);
        assert.equal((await rejection(connection.publish('t', 'y', { qos: 2 }))).details.getAsString('source'), 'puback');
        await connection.publish('t', 'z', { qos: 1 });
    });

    it('MQTT 5: what the CONNACK says the broker lacks is refused with MQTT_FEATURE_NOT_SUPPORTED, before sending', async (t) => {
        const f = fixture(t);
        const received: mqttPacket.Packet[] = [];
        const broker = await f.scripted((packet: mqttPacket.Packet, send) => {
            received.push(packet);
            if (packet.cmd === 'connect') {
                send({
                    cmd: 'connack', sessionPresent: false, reasonCode: 0,
                    properties: {
                        maximumQoS: 1, retainAvailable: false, wildcardSubscriptionAvailable: false,
                        sharedSubscriptionAvailable: false, subscriptionIdentifiersAvailable: false,
                    },
                });
            }
            if (packet.cmd === 'subscribe') send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) });
            if (packet.cmd === 'publish' && packet.qos === 1) send({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0 });
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        await connection.open(null);
        const listener = new RecordingListener();
        for (const [call, feature] of [
            [connection.publish('a', 'x', { qos: 1, retain: true }), 'retain'],
            [connection.subscribe('a/+', { qos: 1 }, listener), 'wildcard_subscriptions'],
            [connection.subscribe('a/#', null, listener), 'wildcard_subscriptions'],
            [connection.subscribe('$share/g/a', { qos: 1 }, listener), 'shared_subscriptions'],
            [connection.subscribe('a', { qos: 1, properties: { subscriptionIdentifier: 5 } }, listener), 'subscription_identifiers'],
        ] as const) {
            const error = await rejection(call);
            assert.ok(error instanceof UnsupportedException, error.message);
            assert.equal(error.code, MqttErrorCode.FeatureNotSupported);
            assert.equal(error.details.getAsString('feature'), feature);
        }
        const qosError = await rejection(connection.subscribe('a', { qos: 2 }, listener));
        assert.equal(qosError.code, MqttErrorCode.QosNotSupported);
        assert.equal(qosError.details.getAsString('source'), 'connack');
        assert.deepEqual(received.filter((p) => p.cmd === 'subscribe' || p.cmd === 'publish'), [], 'nothing was sent');
        assert.equal(connection.getSubscriptions().length, 0);
        await connection.subscribe('a', { qos: 1 }, listener);
        await connection.publish('a', 'x', { qos: 1 });
        assert.deepEqual(received.filter((p) => p.cmd === 'subscribe' || p.cmd === 'publish').map((p) => p.cmd), ['subscribe', 'publish']);
    });

    it('a resubscription granted lower after a reconnect keeps its listeners and logs an error, without looping', async (t) => {
        const f = fixture(t);
        let connections = 0;
        let subscribes = 0;
        const broker = await f.scripted((packet: mqttPacket.Packet, send, socket) => {
            if (packet.cmd === 'connect') {
                connections++;
                send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            }
            if (packet.cmd === 'subscribe') {
                subscribes++;
                // The first broker grants QoS 2, the one after the reconnect only QoS 1.
                send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => (connections === 1 ? s.qos : Math.min(s.qos, 1))) });
            }
            if (packet.cmd === 'publish' && packet.qos === 2) send({ cmd: 'pubrec', messageId: packet.messageId });
            if (packet.cmd === 'pubrel') send({ cmd: 'pubcomp', messageId: packet.messageId });
            void socket;
        });
        const refs = testReferences();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        connection.setReferences(refs.references);
        await connection.open(null);
        await connection.subscribe('t/+', { qos: 2 }, new RecordingListener());
        await connection.publish('t/1', 'x', { qos: 2 });
        connection.getConnection()!.stream.destroy();
        await waitFor(() => connections === 2 && connection.isConnected(), 5000, 'the reconnect');
        await waitFor(() => refs.logger.entries.some((e) => e.level === LogLevel.Error && /granted QoS 1/.test(e.message)), 5000, 'the error');
        await delay(300);
        assert.equal(subscribes, 2, 'subscribed once per connection, not again and again');
        assert.equal(connection.getSubscriptions().length, 1, 'the listener stays');
        // A listener asking the filter for more than the broker now grants is refused, one within it is fine.
        const more = await rejection(connection.subscribe('t/+', { qos: 2 }, new RecordingListener()));
        assert.equal(more.code, MqttErrorCode.QosNotGranted);
        assert.equal(more.details.getAsInteger('granted_qos'), 1);
        await connection.subscribe('t/+', { qos: 1 }, new RecordingListener());
        assert.equal(subscribes, 2, 'nothing sent again for them');
        assert.equal(connection.getSubscriptions().length, 2);
    });

    /**
     * An MQTT 3.1.1 broker with QoS 2 that lets `unanswered(n, ...)` drop the n-th QoS 2 PUBLISH it
     * gets (true: it did, no PUBREC), and a connection to it that reconnects fast, opened.
     */
    async function qos2Broker(f: Fixture, unanswered: (n: number, socket: Socket, send: (packet: mqttPacket.Packet) => void) => boolean): Promise<{ connection: MqttConnection; received: () => number }> {
        let received = 0;
        const broker = await f.scripted((packet: mqttPacket.Packet, send, socket) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            if (packet.cmd === 'publish' && packet.qos === 2 && !unanswered(++received, socket, send)) send({ cmd: 'pubrec', messageId: packet.messageId });
            if (packet.cmd === 'pubrel') send({ cmd: 'pubcomp', messageId: packet.messageId });
        });
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        return { connection, received: () => received };
    }

    it('a broker that answered a QoS 2 publish with PUBREC is never taken for one without QoS 2, whatever closes follow', async (t) => {
        const f = fixture(t);
        // The first publish goes through; the second meets two closes before it is answered.
        const { connection, received } = await qos2Broker(f, (n, socket) => {
            if (n === 2 || n === 3) socket.destroy();
            return n === 2 || n === 3;
        });
        await connection.publish('t', 'first', { qos: 2 });
        await connection.publish('t', 'second', { qos: 2 });
        assert.equal(received(), 4, 'sent three times, answered the third');
    });

    it('closes count against a QoS 2 publish only when each comes right after it, twice in a row', async (t) => {
        const f = fixture(t);
        // Closed once right after it, then once after another packet came in between: no two in a row.
        const { connection, received } = await qos2Broker(f, (n, socket, send) => {
            if (n === 1) socket.destroy();
            if (n === 2) setTimeout(() => { send({ cmd: 'pingresp' }); setTimeout(() => socket.destroy(), 20); }, 20);
            return n <= 2;
        });
        await connection.publish('t', 'x', { qos: 2 });
        assert.equal(received(), 3);
    });

    it('MQTT 5: a CONNACK that lowers the maximum QoS takes back the QoS 2 publishes the broker had not answered', async (t) => {
        const f = fixture(t);
        let connections = 0;
        const publishes: number[] = [];
        const broker = await f.scripted((packet: mqttPacket.Packet, send) => {
            if (packet.cmd === 'connect') {
                connections++;
                send({ cmd: 'connack', sessionPresent: false, reasonCode: 0, ...(connections > 1 ? { properties: { maximumQoS: 1 } } : {}) });
            }
            // The first broker never answers a QoS 2 publish.
            if (packet.cmd === 'publish') publishes.push(connections);
            if (packet.cmd === 'publish' && packet.qos === 1) send({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0 });
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const pending = connection.publish('t', 'x', { qos: 2 });
        await waitFor(() => publishes.length === 1, 5000, 'the QoS 2 publish');
        connection.getConnection()!.stream.destroy();
        const error = await rejection(pending);
        assert.equal(error.code, MqttErrorCode.QosNotSupported);
        assert.equal(error.details.getAsString('source'), 'connack');
        assert.equal(error.details.getAsString('delivered'), 'unknown', 'sent to the first broker, unanswered');
        await connection.publish('t', 'y', { qos: 1 });
        assert.deepEqual(publishes, [1, 2], 'the QoS 2 publish was not sent to the second broker');
        assert.equal(connections, 2, 'no reconnect storm');
    });
});

// Poison packets: a PUBLISH or SUBSCRIBE the broker closes the connection on, again and again, fails
// with MQTT_POISON_PACKET and is not sent again; the connection goes on serving everything else.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { RecordingListener, testReferences } from '../helpers/components';
import { type Fixture, fixture } from '../helpers/fixture';

/** The call's error, or a failure when it does not settle in `ms` (before the rule, the call never settled). */
async function outcome(call: Promise<unknown>, ms: number, what: string): Promise<ConnectionException> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms); });
    try {
        return await Promise.race([call.then(() => { throw new Error(`${what} succeeded`); }, (err: ConnectionException) => err), timeout]);
    } finally {
        clearTimeout(timer);
    }
}

/** The connection serves a QoS 1 round trip and a new subscription, and says it is up. */
async function stillServes(f: Fixture, connection: MqttConnection, url: string): Promise<void> {
    const topic = uniqueTopic('after-poison');
    const listener = new RecordingListener();
    await connection.subscribe(topic, { qos: 1 }, listener);
    const other = f.connection(url);
    await other.open(null);
    await other.publish(topic, 'after', { qos: 1 });
    await connection.publish(topic, 'own', { qos: 1 });
    await waitFor(() => listener.received.length >= 2, 10000, 'both messages');
    assert.equal(connection.getStatus().state, 'connected');
}

describe('MqttConnection poison packets', { timeout: 60000 }, () => {
    it('fails a QoS 1 publish the broker closes the connection on three times in a row, takes it out of the resend, and goes on', async (t) => {
        const f = fixture(t);
        // Aedes closes the connection on a publish it refuses (as MQTT 3.1.1 brokers do).
        const broker = await f.aedes({ authorizePublish: (_id, topic) => !topic.startsWith('refused/') });
        const { references, logger, counters } = testReferences();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 50);
        connection.setReferences(references);
        await connection.open(null);
        const err = await outcome(connection.publish('refused/x', 'poison', { qos: 1 }), 20000, 'the poison publish');
        assert.ok(err instanceof ConnectionException, String(err));
        assert.equal(err.code, MqttErrorCode.PoisonPacket, err.message);
        assert.equal(err.details.getAsNullableString('topic'), 'refused/x');
        assert.match(err.message, /closed the connection 3 times in a row on the PUBLISH to refused\/x/);
        await waitFor(() => connection.isConnected(), 10000, 'the connection up again');
        await stillServes(f, connection, broker.url);
        assert.match(connection.getStatus().lastError ?? '', /PUBLISH to refused\/x/);
        assert.ok(logger.messages().some((m) => /closes the connection on a PUBLISH to refused\/x/.test(m)), logger.messages().join('\n'));
        assert.equal(counters.increments.get('mqtt.poison_packets'), 1);
        assert.equal(connection.getStatus().pendingPublishes, 0);
    });

    it('fails a QoS 1 publish to $SYS/... on Aedes, which closes the connection on it', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 50);
        await connection.open(null);
        const err = await outcome(connection.publish('$SYS/mine', 'x', { qos: 1 }), 20000, 'the $SYS publish');
        assert.equal(err.code, MqttErrorCode.PoisonPacket, err.message);
        await waitFor(() => connection.isConnected(), 10000, 'the connection up again');
        await stillServes(f, connection, broker.url);
    });

    it('fails a SUBSCRIBE the broker closes the connection on three times in a row, and keeps the other subscriptions', async (t) => {
        const f = fixture(t);
        // A peer that hangs up on a SUBSCRIBE to bad/filter and answers everything else.
        const peer = await f.scripted((packet, send, socket) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            if (packet.cmd === 'subscribe') {
                if (packet.subscriptions.some((s) => s.topic === 'bad/filter')) socket.destroy();
                else send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) });
            }
            if (packet.cmd === 'publish' && packet.qos === 1) send({ cmd: 'puback', messageId: packet.messageId });
        });
        const connection = f.connection(peer.url, 'options.reconnect_timeout', 50);
        await connection.open(null);
        await connection.subscribe('good/filter', { qos: 1 }, new RecordingListener());
        const err = await outcome(connection.subscribe('bad/filter', { qos: 1 }, new RecordingListener()), 20000, 'the poison subscribe');
        assert.equal(err.code, MqttErrorCode.PoisonPacket, err.message);
        assert.match(err.message, /SUBSCRIBE to bad\/filter/);
        await waitFor(() => connection.isConnected(), 10000, 'the connection up again');
        assert.deepEqual(connection.getSubscriptions().map((s) => s.topic), ['good/filter']);
        await connection.publish('good/filter', 'x', { qos: 1 });
        assert.match(connection.getStatus().lastError ?? '', /SUBSCRIBE to bad\/filter/);
    });

    it('fails a QoS 1 publish over Mosquitto\'s packet size limit under MQTT 3.1.1, and goes on', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        // MQTT 3.1.1 has no way to say the limit: Mosquitto closes the connection on a bigger packet.
        const broker = await f.mosquitto({ extraConfig: ['max_packet_size 2000'] });
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 50);
        await connection.open(null);
        const err = await outcome(connection.publish(uniqueTopic('big'), 'x'.repeat(5000), { qos: 1 }), 20000, 'the oversized publish');
        assert.equal(err.code, MqttErrorCode.PoisonPacket, err.message);
        await waitFor(() => connection.isConnected(), 10000, 'the connection up again');
        await stillServes(f, connection, broker.url);
    });

    it('does not take a broker that closes seconds after a packet, while it recovers, for a poison packet: the publish completes', async (t) => {
        // A NATS node whose cluster elects a leader takes a QoS 1 PUBLISH, fails to store it within its
        // 4 s JetStream timeout and closes the connection; after the election it answers. A poison
        // packet is closed on at once; this broker takes 2.5 s each time, four times in a row.
        const f = fixture(t);
        let troubledConnections = 4;
        const peer = await f.scripted((packet, send, socket) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            if (packet.cmd !== 'publish' || packet.qos !== 1) return;
            if (troubledConnections > 0) {
                troubledConnections--;
                setTimeout(() => socket.destroy(), 2500);
            } else {
                send({ cmd: 'puback', messageId: packet.messageId });
            }
        });
        const connection = f.connection(peer.url, 'options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 100);
        await connection.open(null);
        const published = connection.publish(uniqueTopic('recovering'), 'x', { qos: 1 });
        await Promise.race([published, waitFor(() => troubledConnections === 0 && connection.isConnected(), 30000, 'the broker recovered')]);
        await published;
        assert.doesNotMatch(connection.getStatus().lastError ?? '', /closed the connection 3 times/);
    });
});

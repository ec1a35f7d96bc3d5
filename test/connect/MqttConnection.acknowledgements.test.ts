// Acknowledgement after processing: a listener that defers a QoS 1 message's PUBACK keeps it back
// until it settles, PUBACKs go in arrival order, and a kept session gets an unsettled message again.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';

import type { IPublishPacket, Packet } from 'mqtt';
import * as mqttPacket from 'mqtt-packet';

import type { MqttConnection } from '../../src';
import { uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, uniqueClientId } from '../helpers/components';
import { type BrokerKind, EACH_BROKER, fixture } from '../helpers/fixture';

/** A listener that defers the PUBACK of each message whose payload starts with `defer`, and keeps the settles. */
class DeferringListener {
    public readonly received: { payload: string; dup: boolean }[] = [];
    public readonly settles = new Map<string, (() => void) | null>();

    public constructor(private readonly _connection: MqttConnection) {}

    public onMessage(_topic: string, data: Buffer, packet: IPublishPacket): void {
        const payload = data.toString();
        this.received.push({ payload, dup: packet.dup });
        if (payload.startsWith('defer')) this.settles.set(payload, this._connection.deferAcknowledgement(packet));
    }
}

/** The message ids of the PUBACKs (or PUBCOMPs) a connection's client writes, in order. */
function pubacks(connection: MqttConnection, cmd: 'puback' | 'pubcomp' = 'puback'): number[] {
    const sent: number[] = [];
    connection.getConnection()!.on('packetsend', (packet: Packet) => {
        if (packet.cmd === cmd) sent.push(packet.messageId!);
    });
    return sent;
}

/** A subscribing and a publishing connection, open, on a broker of `kind` the test's fixture stops. */
async function openPair(t: TestContext, kind: BrokerKind, ...subTuples: unknown[]): Promise<{ sub: MqttConnection; pub: MqttConnection }> {
    const f = fixture(t);
    const broker = await f.broker(kind);
    const sub = f.connection(broker.url, ...subTuples);
    const pub = f.connection(broker.url);
    await sub.open(null);
    await pub.open(null);
    return { sub, pub };
}

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttConnection acknowledgement after processing (${kind})`, { skip, timeout: 30000 }, () => {
        it('keeps a deferred PUBACK back until it is settled, and the PUBACKs after it behind it, in arrival order', async (t) => {
            const { sub, pub } = await openPair(t, kind);
            const topic = uniqueTopic('ack-later');
            const listener = new DeferringListener(sub);
            await sub.subscribe(topic, { qos: 1 }, listener);
            const sent = pubacks(sub);
            await pub.publish(topic, 'defer-1', { qos: 1 });
            await pub.publish(topic, 'plain-2', { qos: 1 });
            await waitFor(() => listener.received.length === 2, 5000, 'both messages');
            // A round trip of the subscriber's own: MQTT.js has handled both PUBLISH packets by its answer.
            await sub.publish(uniqueTopic('ack-later-probe'), 'x', { qos: 1 });
            assert.deepEqual(sent, [], 'no PUBACK before the first message is settled');
            const settle = listener.settles.get('defer-1');
            assert.ok(settle, 'a QoS 1 message can be deferred');
            settle();
            await waitFor(() => sent.length === 2, 5000, 'both PUBACKs');
            const ids = [...sent];
            settle();
            await sub.publish(uniqueTopic('ack-later-probe'), 'x', { qos: 1 });
            assert.deepEqual(sent, ids, 'a second settle sends nothing');
            assert.equal(sub.isConnected(), true);
        });

        it('keeps a deferred QoS 2 PUBCOMP back until it is settled (MQTT.js answered PUBREC already)', async (t) => {
            const { sub, pub } = await openPair(t, kind);
            const topic = uniqueTopic('ack-qos2');
            const listener = new DeferringListener(sub);
            await sub.subscribe(topic, { qos: 2 }, listener);
            const sent = pubacks(sub, 'pubcomp');
            await pub.publish(topic, 'defer-2', { qos: 2 });
            await pub.publish(topic, 'plain-2', { qos: 2 });
            await waitFor(() => listener.received.length === 2, 5000, 'both messages');
            await sub.publish(uniqueTopic('ack-qos2-probe'), 'x', { qos: 1 });
            assert.deepEqual(sent, [], 'no PUBCOMP before the first message is settled');
            listener.settles.get('defer-2')!();
            await waitFor(() => sent.length === 2, 5000, 'both PUBCOMPs');
        });

        it('sends the PUBACK once every listener that deferred the message has settled', async (t) => {
            const { sub, pub } = await openPair(t, kind);
            const topic = uniqueTopic('ack-two');
            const first = new DeferringListener(sub);
            const second = new DeferringListener(sub);
            await sub.subscribe(topic, { qos: 1 }, first);
            await sub.subscribe(topic, { qos: 1 }, second);
            const sent = pubacks(sub);
            await pub.publish(topic, 'defer', { qos: 1 });
            await waitFor(() => first.received.length === 1 && second.received.length === 1, 5000, 'the message, twice');
            first.settles.get('defer')!();
            await sub.publish(uniqueTopic('ack-two-probe'), 'x', { qos: 1 });
            assert.deepEqual(sent, [], 'one listener of two settled: no PUBACK yet');
            second.settles.get('defer')!();
            await waitFor(() => sent.length === 1, 5000, 'the PUBACK');
        });

        it('gets an unsettled message again after the connection drops, when the broker keeps the session', async (t) => {
            const { sub, pub } = await openPair(t, kind, 'client_id', uniqueClientId('ack-session'), 'options.clean_session', false,
                'options.reconnect_timeout', 100);
            const topic = uniqueTopic('ack-again');
            const listener = new DeferringListener(sub);
            await sub.subscribe(topic, { qos: 1 }, listener);
            await pub.publish(topic, 'defer-once', { qos: 1 });
            await waitFor(() => listener.received.length === 1, 5000, 'the message');
            // Killed mid-job, as far as the broker can tell: no PUBACK came.
            await dropConnection(sub);
            await waitFor(() => listener.received.length === 2, 10000, 'the message again after the reconnect');
            assert.equal(listener.received[1].payload, 'defer-once');
            // Aedes 1.2 sends it again without the DUP flag.
            if (kind === 'mosquitto') assert.equal(listener.received[1].dup, true);
            // Settling the copy of the lost connection does nothing; the new copy's settle acknowledges it.
            listener.settles.get('defer-once')!();
            await dropConnection(sub);
            await waitFor(() => listener.received.length === 3, 10000, 'once more: it is still not acknowledged');
            const sent = pubacks(sub);
            listener.settles.get('defer-once')!();
            await waitFor(() => sent.length === 1, 5000, 'its PUBACK');
            // A round trip after it: the PUBACK has reached the broker before the drop.
            await sub.publish(uniqueTopic('ack-again-probe'), 'x', { qos: 1 });
            await dropConnection(sub);
            await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
            await pub.publish(topic, 'plain-after', { qos: 1 });
            await waitFor(() => listener.received.length === 4, 5000, 'the next message');
            assert.equal(listener.received[3].payload, 'plain-after', 'acknowledged: not sent again');
        });

        it('defers nothing for QoS 0, outside onMessage, or on a closed connection', async (t) => {
            const { sub, pub } = await openPair(t, kind);
            const topic = uniqueTopic('ack-none');
            const listener = new DeferringListener(sub);
            const packets: IPublishPacket[] = [];
            await sub.subscribe(topic, { qos: 1 }, { onMessage: (_t, _d, packet) => { packets.push(packet); } });
            await sub.subscribe(`${topic}/zero`, { qos: 0 }, listener);
            await pub.publish(`${topic}/zero`, 'defer-0', { qos: 0 });
            await pub.publish(topic, 'later', { qos: 1 });
            await waitFor(() => listener.received.length === 1 && packets.length === 1, 5000, 'both messages');
            assert.equal(listener.settles.get('defer-0'), null, 'QoS 0');
            assert.equal(sub.deferAcknowledgement(packets[0]), null, 'after onMessage');
            await sub.close(null);
            assert.equal(sub.deferAcknowledgement(packets[0]), null, 'closed');
        });
    });
}

describe('MqttConnection close() and messages that come meanwhile', () => {
    it('does not acknowledge a QoS 1 message that arrives once close() has begun: a kept session sends it again', async (t) => {
        // Two PUBLISHes in one TCP chunk; the listener closes the connection on the first, so the
        // second reaches MQTT.js after the subscriptions are gone. Acknowledged, it would be lost.
        const f = fixture(t);
        const acked: number[] = [];
        const peer = await f.scripted((packet, send, socket) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
            if (packet.cmd === 'subscribe') {
                send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) });
                const publish = (messageId: number): Buffer => mqttPacket.generate({
                    cmd: 'publish', topic: 'closing/t', payload: Buffer.from(String(messageId)), qos: 1, messageId, dup: false, retain: false,
                });
                socket.write(Buffer.concat([publish(1), publish(2)]));
            }
            if (packet.cmd === 'puback') acked.push(packet.messageId!);
        });
        const connection = f.connection(peer.url, 'client_id', uniqueClientId('closing'), 'options.clean_session', false);
        await connection.open(null);
        const got: string[] = [];
        const state: { closing?: Promise<void> } = {};
        await connection.subscribe('closing/t', { qos: 1 }, {
            onMessage: (_topic: string, data: Buffer) => {
                got.push(data.toString());
                state.closing ??= connection.close(null);
            },
        });
        await waitFor(() => state.closing !== undefined, 5000, 'the first message');
        await state.closing;
        assert.deepEqual(got, ['1']);
        assert.deepEqual(acked, [1], 'only the delivered message is acknowledged');
    });
});

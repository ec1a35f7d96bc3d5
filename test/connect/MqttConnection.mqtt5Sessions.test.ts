// MQTT 5 sessions: session expiry, clean start, broker-assigned client ids, and retained messages after a resumed session.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { delay, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, RecordingListener, uniqueClientId } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection MQTT 5 sessions (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    const cases: { name: string; tuples: unknown[]; kept: boolean; expiry: number | undefined }[] = [
        { name: 'clean_session false keeps the session (no expiry)', tuples: ['options.clean_session', false], kept: true, expiry: 0xFFFFFFFF },
        { name: 'clean_session false with session_expiry 0 ends it at the disconnect',
            tuples: ['options.clean_session', false, 'options.session_expiry', 0], kept: false, expiry: 0 },
        { name: 'clean_session true with session_expiry 60 resumes it after a lost connection',
            tuples: ['options.session_expiry', 60], kept: true, expiry: 60 },
        { name: 'clean_session true without session_expiry ends it at the disconnect', tuples: [], kept: false, expiry: undefined },
    ];
    for (const { name, tuples, kept, expiry } of cases) {
        it(name, async (t) => {
            const f = fixture(t);
            const broker = await f.mosquitto();
            // Through a proxy that refuses the reconnect until the messages are published:
            // on a busy machine the client could otherwise be back before them.
            const proxy = await f.proxy(broker.host, broker.port);
            const sub = f.connection(proxy.url, 'client_id', uniqueClientId('v5'), 'options.protocol_version', 5,
                'options.reconnect_timeout', 1000, ...tuples);
            const pub = f.connection(broker.url, 'options.protocol_version', 5);
            await sub.open(null);
            await pub.open(null);
            const options = sub.getConnection()!.options;
            assert.equal(options.protocolVersion, 5);
            assert.equal(options.properties?.sessionExpiryInterval, expiry);
            const topic = uniqueTopic('v5');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await sub.subscribe(`${topic}/marker`, { qos: 1 }, listener);
            proxy.refuse();
            await dropConnection(sub);
            for (let i = 1; i <= 5; i++) await pub.publish(topic, String(i), { qos: 1 });
            proxy.accept();
            await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
            await waitFor(async () => {
                await pub.publish(`${topic}/marker`, '0', { qos: 1 });
                return listener.topics().includes(`${topic}/marker`);
            }, 10000, 'the marker (subscriptions back)');
            const got = listener.received.filter((m) => m.topic === topic).map((m) => m.data.toString());
            assert.deepEqual(got, kept ? ['1', '2', '3', '4', '5'] : []);
        });
    }

    it('starts a clean session at open() with clean_session true and a session_expiry', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const id = uniqueClientId('v5');
        const tuples = ['client_id', id, 'options.protocol_version', 5, 'options.session_expiry', 60];
        const first = f.connection(broker.url, ...tuples);
        const second = f.connection(broker.url, ...tuples);
        const pub = f.connection(broker.url);
        await first.open(null);
        await pub.open(null);
        const topic = uniqueTopic('v5-clean-start');
        await first.subscribe(topic, { qos: 1 }, new RecordingListener());
        await first.close(null);
        await pub.publish(topic, 'while-away', { qos: 1 });
        const listener = new RecordingListener();
        await second.open(null);
        await second.subscribe(topic, { qos: 1 }, listener);
        await pub.publish(topic, 'live', { qos: 1 });
        await waitFor(() => listener.received.length > 0, 5000, 'the live message');
        await delay(100);
        assert.deepEqual(listener.received.map((m) => m.data.toString()), ['live'], 'the kept session was discarded at open()');
    });

    it('uses a broker-assigned client id, and resumes its session with it after a reconnect', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const sub = f.connection(broker.url, 'options.protocol_version', 5, 'options.broker_assigns_client_id', true,
            'options.session_expiry', 300, 'options.reconnect_timeout', 200);
        const pub = f.connection(broker.url, 'options.protocol_version', 5);
        await Promise.all([sub.open(null), pub.open(null)]);
        const assigned = sub.getStatus().clientId;
        assert.match(assigned, /^auto-/, 'Mosquitto names assigned ids auto-<uuid>');
        assert.match(sub.toString(), new RegExp(assigned));
        const topic = uniqueTopic('assigned');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        await dropConnection(sub);
        await pub.publish(topic, 'while-away', { qos: 1 });
        await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
        await waitFor(() => listener.received.length === 1, 5000, 'the message kept by the session');
        assert.equal(listener.received[0].data.toString(), 'while-away');
        assert.equal(sub.getStatus().clientId, assigned);
    });

    it('opens with broker_assigns_client_id and clean_session false', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.broker_assigns_client_id', true,
            'options.clean_session', false);
        await connection.open(null);
        assert.match(connection.getStatus().clientId, /^auto-/);
    });

    it('does not send a retained message again after a reconnect when the broker kept the subscription', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const pub = f.connection(broker.url, 'options.protocol_version', 5);
        const sub = f.connection(broker.url, 'options.protocol_version', 5, 'client_id', uniqueClientId('rh'),
            'options.session_expiry', 300, 'options.reconnect_timeout', 200);
        await pub.open(null);
        const topic = uniqueTopic('retained');
        await pub.publish(topic, 'state', { qos: 1, retain: true });
        await sub.open(null);
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        await waitFor(() => listener.received.length === 1, 5000, 'the retained message');
        await dropConnection(sub);
        await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
        await pub.publish(topic, 'live', { qos: 1 });
        await waitFor(() => listener.received.some((m) => m.data.toString() === 'live'), 5000, 'the live message');
        assert.deepEqual(listener.received.map((m) => m.data.toString()), ['state', 'live']);
    });
});

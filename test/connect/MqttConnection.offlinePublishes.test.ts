// Publishes made while the connection is down: held up to max_offline_messages and sent after the reconnect, or rejected.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../src';
import { delay, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, RecordingListener, testReferences } from '../helpers/components';
import { EACH_BROKER, fixture } from '../helpers/fixture';

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttConnection publishing while the broker is down (${kind})`, { skip, timeout: 60000 }, () => {
        it('queues publishes while reconnecting and delivers them afterwards', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const sub = f.connection(broker.url, 'options.reconnect_timeout', 100);
            const pub = f.connection(broker.url, 'options.reconnect_timeout', 100);
            await sub.open(null);
            await pub.open(null);
            const topic = uniqueTopic('offline');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await broker.stop();
            await waitFor(() => pub.getConnection()?.connected === false, 5000, 'the publisher to notice');
            // Retained, so the order in which the two clients come back does not matter.
            const publishing = pub.publish(topic, 'while-down', { qos: 1, retain: true });
            await broker.restart();
            await publishing;
            await waitFor(() => listener.received.length > 0, 10000, 'the queued message');
            assert.equal(listener.received[0].data.toString(), 'while-down');
            await pub.publish(topic, '', { qos: 1, retain: true });
        });
    });
}

describe('MqttConnection offline publishes', { timeout: 60000 }, () => {
    it('holds at most max_offline_messages publishes while disconnected, then rejects with MQTT_OFFLINE_LIMIT', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const pub = f.connection(broker.url, 'options.reconnect_timeout', 100, 'options.max_offline_messages', 3);
        const none = f.connection(broker.url, 'options.reconnect_timeout', 100, 'options.max_offline_messages', 0);
        const sub = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await Promise.all([pub.open(null), none.open(null), sub.open(null)]);
        const topic = uniqueTopic('offline-limit');
        await broker.stop();
        await waitFor(() => !pub.isConnected() && !none.isConnected() && !sub.isConnected(), 5000, 'the loss');

        // QoS 0 waits offline as well, and counts against the same limit.
        const held = [pub.publish(topic, '1', { qos: 1 }), pub.publish(topic, '2', { qos: 0 }), pub.publish(topic, '3', { qos: 2 })];
        assert.equal(pub.getStatus().pendingPublishes, 3);
        await assert.rejects(pub.publish(topic, '4', { qos: 1 }), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.OfflineLimit);
            assert.equal(err.details.getAsInteger('limit'), 3);
            assert.match(err.message, /max_offline_messages \(3\)/);
            return true;
        });
        await assert.rejects(none.publish(topic, 'x', { qos: 1 }), { code: MqttErrorCode.OfflineLimit });
        assert.equal(pub.getStatus().pendingPublishes, 3, 'a refused publish is not held');

        await broker.restart();
        await waitFor(() => sub.isConnected(), 10000, 'the subscriber to come back');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 2 }, listener);
        await Promise.all(held);
        assert.equal(pub.getStatus().pendingPublishes, 0);
        // Connected again: the limit no longer applies.
        await Promise.all([1, 2, 3, 4, 5].map((i) => pub.publish(topic, `after-${i}`, { qos: 1 })));
        await waitFor(() => listener.received.length >= 5, 5000, 'the messages after the reconnect');
    });

    it('stays reconnecting, with the offline limit, until MQTT.js has resent what it kept', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ authorizePublish: (_id, topic) => (topic.startsWith('held/') ? 'hold' : true) });
        const { references, logger } = testReferences();
        const conn = f.connection(broker.url, 'options.reconnect_timeout', 200, 'options.max_offline_messages', 2);
        conn.setReferences(references);
        const pub = f.connection(broker.url);
        await conn.open(null);
        await pub.open(null);
        const topic = uniqueTopic('f7');
        const l = new RecordingListener();
        await conn.subscribe(topic, { qos: 1 }, l);
        const stuck = conn.publish('held/x', 'never acked', { qos: 1 });
        stuck.catch(() => undefined);
        await delay(200);
        await dropConnection(conn);
        // The client reconnects, but MQTT.js resends the unacknowledged publish first, and the
        // broker never acknowledges it: not ready, so not connected.
        await waitFor(() => conn.getConnection()!.connected, 10000, 'the MQTT reconnect');
        await delay(500);
        const status = conn.getStatus();
        assert.equal(status.state, 'reconnecting');
        assert.equal(status.connected, false);
        assert.equal(conn.isConnected(), false);
        assert.equal(logger.messages().filter((m) => /Reconnected/.test(m)).length, 0);
        const queued = conn.publish(topic, 'queued', { qos: 1 });
        queued.catch(() => undefined);
        await assert.rejects(conn.publish(topic, 'over the limit', { qos: 1 }), { code: 'MQTT_OFFLINE_LIMIT' });
    });

    it('holds a publish made while MQTT.js resends its store, through another loss, and sends it after the next reconnect', async (t) => {
        const f = fixture(t);
        // The broker leaves held/ publishes unanswered while `holding`: MQTT.js's resend stops at one.
        let holding = true;
        const broker = await f.aedes({ authorizePublish: (_id, topic) => (holding && topic.startsWith('held/') ? 'hold' : true) });
        const conn = f.connection(broker.url, 'options.reconnect_timeout', 100);
        const sub = f.connection(broker.url);
        await conn.open(null);
        await sub.open(null);
        const topic = uniqueTopic('replay-window');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        const stuck = conn.publish('held/x', 'held', { qos: 1 });
        await delay(200);
        await dropConnection(conn);
        await waitFor(() => conn.getConnection()!.connected, 10000, 'the MQTT reconnect, with the resend under way');
        assert.equal(conn.getStatus().state, 'reconnecting');
        // Made while MQTT.js resends: before, MQTT.js queued it and failed it ("Connection closed") at the next loss.
        const results: string[] = [];
        const publishes = [0, 1, 2].map((n) => conn.publish(topic, `during-resend-${n}`, { qos: n as 0 | 1 | 2 })
            .then(() => { results.push(`${n}: sent`); }, (err: Error) => { results.push(`${n}: ${err.message}`); }));
        await delay(100);
        holding = false;
        await dropConnection(conn);
        await Promise.all(publishes);
        await stuck;
        assert.deepEqual(results.sort(), ['0: sent', '1: sent', '2: sent']);
        await waitFor(() => listener.received.length >= 3, 10000, 'the three publishes');
        assert.deepEqual(listener.received.map((m) => m.data.toString()).sort(), ['during-resend-0', 'during-resend-1', 'during-resend-2']);
    });

    it('rejects an unacknowledged QoS 1 publish when the connection is lost and retry_connect is false', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ authorizePublish: (_id, topic) => !topic.startsWith('refused/') });
        const connection = f.connection(broker.url, 'options.retry_connect', false);
        await connection.open(null);
        // The broker answers a refused publish by closing the connection.
        await assert.rejects(connection.publish('refused/x', 'x', { qos: 1 }), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException, String(err));
            assert.equal(err.code, MqttErrorCode.NotConnected);
            return true;
        });
        assert.equal(connection.isOpen(), true);
    });
});

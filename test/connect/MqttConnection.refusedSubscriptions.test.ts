// SUBSCRIBEs the broker refuses (SUBACK failure): the calls are rejected with the reason code and no entry is kept.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import type { Packet } from 'mqtt';
import { ConnectionException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { waitFor } from '../helpers/brokers';
import { RecordingListener } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

// Mosquitto 2.0 grants MQTT 3.1.1 subscriptions that its ACL denies (and then delivers nothing),
// so SUBACK failures are tested on the embedded broker, which can refuse a filter.
describe('MqttConnection when the broker refuses a subscription', { timeout: 30000 }, () => {
    const suite = suiteFixture();
    let connection: MqttConnection;
    before(async () => {
        const broker = await suite.aedes({ authorizeSubscribe: (_id, topic) => !topic.startsWith('denied/') });
        connection = suite.connection(broker.url);
        await connection.open(null);
    });

    it('rejects with the reason code and keeps no entry', async () => {
        const listener = new RecordingListener();
        await assert.rejects(connection.subscribe('denied/topic', { qos: 1 }, listener), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException, String(err));
            assert.equal(err.code, MqttErrorCode.SubscribeRejected);
            assert.equal(err.details.getAsNullableInteger('reason_code'), 0x80);
            assert.equal(err.details.getAsNullableString('topic'), 'denied/topic');
            return true;
        });
        assert.equal(connection.getSubscriptions().length, 0);
    });

    it('rejects every listener that waited for the same SUBACK', async () => {
        const a = new RecordingListener();
        const b = new RecordingListener();
        const results = await Promise.allSettled([
            connection.subscribe('denied/+', null, a),
            connection.subscribe('denied/+', null, b),
        ]);
        assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
        assert.equal(connection.getSubscriptions().length, 0);
    });

    it('keeps working afterwards, and a refused filter can be tried again', async () => {
        const listener = new RecordingListener();
        await connection.subscribe('allowed/topic', { qos: 1 }, listener);
        await connection.publish('allowed/topic', 'ok', { qos: 1 });
        await waitFor(() => listener.received.length === 1, 5000, 'the allowed message');
        await assert.rejects(connection.subscribe('denied/topic', null, listener), { code: MqttErrorCode.SubscribeRejected });
        assert.deepEqual(connection.getSubscriptions().map((s) => s.topic), ['allowed/topic']);
        await connection.unsubscribe('allowed/topic', listener);
    });
});

describe('MqttConnection when the broker refuses one of two SUBSCRIBEs for a filter', { timeout: 30000 }, () => {
    it('keeps one SUBSCRIBE per QoS step when an earlier SUBSCRIBE for the filter is refused', async (t) => {
        const f = fixture(t);
        let first = true;
        const broker = await f.aedes({
            authorizeSubscribe: (_id, topic) => {
                if (!topic.startsWith('race/') || !first) return true;
                first = false;
                return false;
            },
        });
        const connection = f.connection(broker.url);
        await connection.open(null);
        const sent: Packet[] = [];
        connection.getConnection()!.on('packetsend', (p: Packet) => { if (p.cmd === 'subscribe') sent.push(p); });
        const a = new RecordingListener();
        const b = new RecordingListener();
        const c = new RecordingListener();
        const results = await Promise.allSettled([
            connection.subscribe('race/f', { qos: 0 }, a),
            connection.subscribe('race/f', { qos: 1 }, b),
        ]);
        assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled']);
        await connection.subscribe('race/f', { qos: 1 }, c);
        assert.equal(sent.length, 2, 'the QoS 1 subscription already stands: no third SUBSCRIBE');
        assert.deepEqual(connection.getSubscriptions().map((s) => s.listener === b || s.listener === c), [true, true]);
    });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttMessageQueue } from '../../src';
import { mosquittoSkip, uniqueTopic } from '../helpers/brokers';
import { RecordingListener } from '../helpers/components';
import { fixture } from '../helpers/fixture';
import { waitFor } from '../helpers/net';

function queue(url: string, topic: string, ...tuples: unknown[]): MqttMessageQueue {
    const q = new MqttMessageQueue('q');
    q.configure(ConfigParams.fromTuples('connection.uri', url, 'topic', topic, 'options.qos', 1, ...tuples));
    return q;
}

describe('MqttMessageQueue over MQTT 5 (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('raw mode: the envelope fields travel as user properties beside the untouched payload', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const topic = uniqueTopic('raw5');
        const sender = f.closing(queue(broker.url, topic, 'options.protocol_version', 5));
        const receiver = f.closing(queue(broker.url, topic, 'options.protocol_version', 5, 'options.autosubscribe', true));
        const tap = f.connection(broker.url, 'options.protocol_version', 5);
        await Promise.all([sender.open(null), receiver.open(null), tap.open(null)]);
        const raw = new RecordingListener();
        await tap.subscribe(topic, { qos: 1 }, raw);
        const envelope = new MessageEnvelope('corr-7', 'order.created', null);
        envelope.message = Buffer.from([0x00, 0xff, 0x10]);
        const sentTime = new Date('2026-01-02T03:04:05.678Z');
        envelope.sent_time = sentTime;
        await sender.send(null, envelope);

        const got = await receiver.receive(null, 5000);
        assert.ok(got, 'a message');
        assert.deepEqual(got.message, Buffer.from([0x00, 0xff, 0x10]));
        assert.equal(got.message_id, envelope.message_id);
        assert.equal(got.correlation_id, 'corr-7');
        assert.equal(got.message_type, 'order.created');
        assert.equal(got.sent_time.toISOString(), sentTime.toISOString());

        await waitFor(() => raw.received.length === 1, 5000, 'the raw message');
        assert.deepEqual(raw.received[0].data, Buffer.from([0x00, 0xff, 0x10]), 'the payload is the bytes alone');
        assert.deepEqual({ ...raw.received[0].packet.properties?.userProperties }, {
            message_id: envelope.message_id, correlation_id: 'corr-7', message_type: 'order.created', sent_time: sentTime.toISOString(),
        });
    });

    it('raw mode: a plain MQTT 5 message without those properties gets the defaults', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const topic = uniqueTopic('raw5');
        const receiver = f.closing(queue(broker.url, topic, 'options.protocol_version', 5, 'options.autosubscribe', true));
        const publisher = f.connection(broker.url, 'options.protocol_version', 5);
        await Promise.all([receiver.open(null), publisher.open(null)]);
        await publisher.publish(topic, 'plain', { qos: 1, properties: { userProperties: { other: 'x', correlation_id: '' } } });
        const got = await receiver.receive(null, 5000);
        assert.ok(got);
        assert.equal(got.getMessageAsString(), 'plain');
        assert.equal(got.message_type, topic, 'the topic, as in MQTT 3.1.1');
        assert.equal(got.correlation_id, null);
        assert.ok(got.message_id.length > 0);
        assert.ok(Math.abs(got.sent_time.getTime() - Date.now()) < 10000, 'the receive time');
    });

    it('envelope mode over MQTT 5 sends the JSON envelope alone', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const topic = uniqueTopic('env5');
        const sender = f.closing(queue(broker.url, topic, 'options.protocol_version', 5, 'options.serialize_envelope', true));
        const receiver = f.closing(queue(broker.url, topic, 'options.protocol_version', 5, 'options.serialize_envelope', true, 'options.autosubscribe', true));
        const tap = f.connection(broker.url, 'options.protocol_version', 5);
        await Promise.all([sender.open(null), receiver.open(null), tap.open(null)]);
        const raw = new RecordingListener();
        await tap.subscribe(topic, { qos: 1 }, raw);
        await sender.send(null, new MessageEnvelope('c1', 'greeting', 'hello'));
        const got = await receiver.receive(null, 5000);
        assert.equal(got?.getMessageAsString(), 'hello');
        assert.equal(got?.correlation_id, 'c1');
        await waitFor(() => raw.received.length === 1, 5000, 'the raw message');
        assert.equal(raw.received[0].packet.properties?.userProperties, undefined, 'no user properties in envelope mode');
    });
});

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { ConfigParams, Descriptor } from 'pip-services3-commons-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { DefaultMqttFactory, MqttConnection, MqttDescriptors, MqttMessageQueue, MqttMessageQueueFactory } from '../../src';
import { type AedesTestBroker, uniqueTopic } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

describe('DefaultMqttFactory', () => {
    const factory = new DefaultMqttFactory();

    it('creates a connection, named queues and a queue factory by descriptor', () => {
        const connection: unknown = factory.create(new Descriptor('pip-services', 'connection', 'mqtt', 'default', '1.0'));
        assert.ok(connection instanceof MqttConnection);
        const queue: unknown = factory.create(new Descriptor('pip-services', 'message-queue', 'mqtt', 'orders', '1.0'));
        assert.ok(queue instanceof MqttMessageQueue);
        assert.equal(queue.getName(), 'orders');
        const unnamed: unknown = factory.create(MqttDescriptors.MessageQueue);
        assert.ok(unnamed instanceof MqttMessageQueue);
        assert.equal(unnamed.getName(), undefined, 'a wildcard name leaves the name to the configuration');
        const queues: unknown = factory.create(new Descriptor('pip-services', 'queue-factory', 'mqtt', 'default', '1.0'));
        assert.ok(queues instanceof MqttMessageQueueFactory);
    });

    it('answers canCreate for its descriptors only', () => {
        for (const descriptor of Object.values(MqttDescriptors)) assert.ok(factory.canCreate(descriptor));
        assert.ok(factory.canCreate(new Descriptor('pip-services', 'connection', 'mqtt', 'x', '1.0')));
        for (const other of [
            new Descriptor('pip-services', 'connection', 'kafka', 'default', '1.0'),
            new Descriptor('pip-services', 'message-queue', 'memory', 'default', '1.0'),
            new Descriptor('pip-services', 'connection', 'mqtt', 'default', '2.0'),
        ]) {
            assert.equal(factory.canCreate(other), null, other.toString());
            assert.equal(factory.create(other), null);
        }
    });
});

describe('MqttMessageQueueFactory', { timeout: 30000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    it('creates queues configured and referenced like itself', async (t) => {
        const f = fixture(t);
        const factory = new MqttMessageQueueFactory();
        const topic = uniqueTopic('factory');
        factory.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'topic', topic, 'options.autosubscribe', true));
        const { references, counters } = testReferences();
        factory.setReferences(references);
        assert.ok(factory.canCreate(new Descriptor('pip-services', 'message-queue', 'mqtt', 'jobs', '1.0')));
        const queue = f.closing(factory.create(new Descriptor('pip-services', 'message-queue', 'mqtt', 'jobs', '1.0')) as MqttMessageQueue);
        assert.equal(queue.getName(), 'jobs');
        const other = factory.createQueue('other') as MqttMessageQueue;
        assert.equal(other.getName(), 'other');
        await queue.open(null);
        await queue.send(null, new MessageEnvelope('c', 't', 'hello'));
        assert.equal((await queue.receive(null, 5000))?.getMessageAsString(), 'hello');
        assert.equal(counters.increments.get('queue.jobs.sent_messages'), 1, 'the factory references reached the queue');
    });
});

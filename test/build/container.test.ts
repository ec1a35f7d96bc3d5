import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';

import { ConfigParams, Descriptor } from 'pip-services3-commons-nodex';
import type { LogCounters } from 'pip-services3-components-nodex';
import { Container } from 'pip-services3-container-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { DefaultMqttFactory, MqttConnection, MqttMessageQueue } from '../../src';
import { type AedesTestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { suiteFixture } from '../helpers/fixture';

/** The YAML lives beside this test's source (tsc does not copy it to dist). */
const CONFIG = join(__dirname, '../../../test/build/container.yml');

/** A container whose references the test can look into. */
class TestContainer extends Container {
    public get<T>(descriptor: string): T {
        return this._references.getOneRequired<T>(Descriptor.fromString(descriptor));
    }
}

describe('MQTT components in a Pip.Services container', { timeout: 30000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    it('builds from YAML: two queues share one connection, messages flow, counters count', async () => {
        const container = new TestContainer('mqtt-test');
        container.addFactory(new DefaultMqttFactory());
        container.readConfigFromFile(null as unknown as string, CONFIG,
            ConfigParams.fromTuples('MQTT_URI', broker.url, 'TOPIC', uniqueTopic('container')));
        const connectionsBefore = broker.broker.connectionCount();
        const clientsBefore = broker.broker.clientCount();
        await container.open('container');
        try {
            const connection = container.get<MqttConnection>('pip-services:connection:mqtt:default:1.0');
            const orders = container.get<MqttMessageQueue>('pip-services:message-queue:mqtt:orders:1.0');
            const audit = container.get<MqttMessageQueue>('pip-services:message-queue:mqtt:audit:1.0');
            assert.ok(connection instanceof MqttConnection && orders instanceof MqttMessageQueue && audit instanceof MqttMessageQueue);
            assert.equal(orders.getName(), 'orders', 'named after the descriptor');
            assert.equal(audit.getName(), 'audit');
            assert.ok(orders.isOpen() && audit.isOpen() && connection.isOpen());

            await orders.send('c1', new MessageEnvelope('c1', 'order.created', '{"id":1}'));
            const order = await orders.receive(null, 5000);
            assert.equal(order?.getMessageAsString(), '{"id":1}');

            const auditing = audit.receive(null, 5000); // subscribes on first receive
            await waitFor(() => connection.getSubscriptions().length === 2, 5000, 'the audit subscription');
            await audit.sendAsObject('c2', 'audit.entry', { who: 'alice' });
            const entry = await auditing;
            assert.deepEqual(entry?.getMessageAs(), { who: 'alice' });
            assert.equal(entry?.correlation_id, 'c2');

            assert.equal(broker.broker.connectionCount() - connectionsBefore, 1, 'the broker saw one client connection');
            assert.equal(broker.broker.clientCount() - clientsBefore, 1);

            const counters = container.get<LogCounters>('pip-services:counters:log:default:1.0');
            const count = (name: string): number | undefined => counters.getAll().find((c) => c.name === name)?.count;
            assert.equal(count('queue.orders.sent_messages'), 1);
            assert.equal(count('queue.orders.received_messages'), 1);
            assert.equal(count('queue.audit.sent_messages'), 1);
            assert.equal(count('mqtt.published_messages'), 2);
        } finally {
            await container.close('container');
        }
        await waitFor(() => broker.broker.clientCount() === clientsBefore, 5000, 'the connection to close with the container');
    });
});

import { Factory } from 'pip-services3-components-nodex';

import { MqttConnection } from '../connect/MqttConnection';
import { MqttMessageQueue } from '../queues/MqttMessageQueue';
import { MqttDescriptors, queueName } from './MqttDescriptors';
import { MqttMessageQueueFactory } from './MqttMessageQueueFactory';

/**
 * Creates the MQTT components by their descriptors; add it to a container to use them from
 * configuration:
 *
 * - `pip-services:connection:mqtt:*:1.0`: [[MqttConnection]]
 * - `pip-services:message-queue:mqtt:*:1.0`: [[MqttMessageQueue]], named after the descriptor
 * - `pip-services:queue-factory:mqtt:*:1.0`: [[MqttMessageQueueFactory]]
 *
 * ### Example ###
 *
 *     const container = new Container('service');
 *     container.addFactory(new DefaultMqttFactory());
 */
export class DefaultMqttFactory extends Factory {
    public constructor() {
        super();
        this.registerAsType(MqttDescriptors.Connection, MqttConnection);
        this.register(MqttDescriptors.MessageQueue, (locator: unknown) => new MqttMessageQueue(queueName(locator)));
        this.registerAsType(MqttDescriptors.QueueFactory, MqttMessageQueueFactory);
    }
}

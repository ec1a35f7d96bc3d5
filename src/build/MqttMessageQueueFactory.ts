import { inspect } from 'node:util';

import type { IMessageQueue } from 'pip-services3-messaging-nodex';
import { MessageQueueFactory } from 'pip-services3-messaging-nodex';

import { redactConfig } from '../connect/config/redact';
import { MqttMessageQueue } from '../queues/MqttMessageQueue';
import { MqttDescriptors, queueName } from './MqttDescriptors';

/**
 * Creates [[MqttMessageQueue]]s by name: `createQueue(name)`, or `create()` with the descriptor
 * `pip-services:message-queue:mqtt:<name>:1.0`. Each queue gets the factory's configuration
 * and references (so queues share the MqttConnection found there).
 *
 * ### Example ###
 *
 *     const factory = new MqttMessageQueueFactory();
 *     factory.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883'));
 *     factory.setReferences(references);
 *     const queue = factory.createQueue('orders');
 *     await queue.open('123');
 */
export class MqttMessageQueueFactory extends MessageQueueFactory {
    public constructor() {
        super();
        this.register(MqttDescriptors.MessageQueue, (locator: unknown) => this.createQueue(queueName(locator) as string));
    }

    /** Creates a queue with this name, configured and referenced like the factory. */
    public createQueue(name: string): IMessageQueue {
        const queue = new MqttMessageQueue(name);
        if (this._config != null) queue.configure(this._config);
        if (this._references != null) queue.setReferences(this._references);
        return queue;
    }

    /** For JSON.stringify: the configuration the queues get, with secrets replaced by `***`. */
    public toJSON(): Record<string, unknown> {
        return { component: 'MqttMessageQueueFactory', config: this._config != null ? redactConfig(this._config) : null };
    }

    /** For console.log and util.inspect: what toJSON() shows, so no secret is printed. */
    public [inspect.custom](): Record<string, unknown> {
        return this.toJSON();
    }
}

import { Descriptor } from 'pip-services3-commons-nodex';

/** The descriptors the MQTT factories create components for; each is declared here only. */
export const MqttDescriptors = {
    /** An [[MqttConnection]]: `pip-services:connection:mqtt:*:1.0`. */
    Connection: new Descriptor('pip-services', 'connection', 'mqtt', '*', '1.0'),
    /** An [[MqttMessageQueue]] named after the descriptor: `pip-services:message-queue:mqtt:*:1.0`. */
    MessageQueue: new Descriptor('pip-services', 'message-queue', 'mqtt', '*', '1.0'),
    /** An [[MqttMessageQueueFactory]]: `pip-services:queue-factory:mqtt:*:1.0`. */
    QueueFactory: new Descriptor('pip-services', 'queue-factory', 'mqtt', '*', '1.0'),
} as const;

/**
 * The queue name a locator asks for: a descriptor's name unless it is a wildcard (`*`) or
 * missing; then undefined, and the queue takes its name from its configuration.
 */
export function queueName(locator: unknown): string | undefined {
    if (!(locator instanceof Descriptor)) return undefined;
    const name = locator.getName();
    return name != null && name !== '' && name !== '*' ? name : undefined;
}

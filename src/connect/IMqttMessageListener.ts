import type { IPublishPacket } from 'mqtt';

/**
 * Receives messages delivered by an [[MqttConnection]] subscription.
 *
 * `onMessage` may be synchronous or return a promise. A listener that throws or whose
 * promise rejects is logged by the connection and never stops delivery to other listeners.
 *
 * `data` is the payload exactly as received (a Buffer); `packet` is the MQTT.js PUBLISH
 * packet (QoS, retain flag, MQTT 5 properties). Treat both as read-only: they are shared
 * with every other listener that receives the same message.
 */
export interface IMqttMessageListener {
    onMessage(topic: string, data: Buffer, packet: IPublishPacket): void | Promise<void>;
}

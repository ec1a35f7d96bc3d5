import type { IClientPublishOptions } from 'mqtt';
import { generate } from 'mqtt-packet';

/** More than the fixed header, topic length, packet id and empty properties of a PUBLISH take. */
const HEADER_ALLOWANCE = 64;

/**
 * Whether an MQTT 5 PUBLISH fits in `maximum` bytes (the broker's maximum packet size). Counted
 * with mqtt-packet, MQTT.js's own codec, only when the payload and topic alone leave it unclear.
 */
export function publishFits(topic: string, payload: Buffer | string, options: IClientPublishOptions, maximum: number, aliased = false): boolean {
    const bulk = Buffer.byteLength(topic, 'utf8') + (Buffer.isBuffer(payload) ? payload.length : Buffer.byteLength(payload, 'utf8'));
    if (bulk > maximum) return false;
    // MQTT.js adds a topic alias (3 bytes) to a publish with its full topic when aliases are on.
    const properties = { ...(options.properties ?? {}), ...(aliased && options.properties?.topicAlias === undefined ? { topicAlias: 1 } : {}) };
    if (Object.keys(properties).length === 0 && bulk + HEADER_ALLOWANCE <= maximum) return true;
    const qos = options.qos ?? 0;
    const packet = generate({
        cmd: 'publish', topic, payload, qos, retain: options.retain ?? false, dup: false,
        ...(qos > 0 ? { messageId: 1 } : {}), properties,
    }, { protocolVersion: 5 });
    return packet.length <= maximum;
}

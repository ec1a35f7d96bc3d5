import type { IClientPublishOptions, IClientSubscribeOptions } from 'mqtt';
import { BadRequestException } from 'pip-services3-commons-nodex';

import type { IMqttMessageListener } from './IMqttMessageListener';
import { MqttErrorCode } from './MqttErrorCode';
import { NO_CID } from './correlation';

/** The largest MQTT packet remaining length (MQTT 3.1.1 section 2.2.3). */
const MAX_REMAINING_LENGTH = 268435455;

function bad(code: string, message: string, topic: string): BadRequestException {
    return new BadRequestException(NO_CID, code, message).withDetails('topic', topic);
}

function isRecord(value: unknown): value is Record<string, unknown> {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkQos(value: unknown, topic: string): 0 | 1 | 2 {
    if (value === undefined || value === null) return 0;
    if (value !== 0 && value !== 1 && value !== 2) {
        throw bad(MqttErrorCode.InvalidQos, `Invalid MQTT QoS ${JSON.stringify(value) ?? typeof value}: use 0, 1 or 2`, topic);
    }
    return value;
}

function checkBoolean(options: Record<string, unknown>, name: string, topic: string): void {
    const value = options[name];
    if (value !== undefined && typeof value !== 'boolean') {
        throw bad(MqttErrorCode.InvalidOptions, `Invalid MQTT option ${name}: must be a boolean`, topic);
    }
}

/** Checks a payload: a Buffer or a string that fits in one MQTT packet. */
export function checkPayload(topic: string, data: unknown): void {
    if (!Buffer.isBuffer(data) && typeof data !== 'string') {
        throw bad(MqttErrorCode.InvalidPayload,
            `Invalid MQTT payload: must be a Buffer or a string, not ${data === null ? 'null' : typeof data}`, topic);
    }
    const size = Buffer.isBuffer(data) ? data.length : Buffer.byteLength(data, 'utf8');
    // Fixed overhead: topic length prefix and packet identifier.
    if (size + Buffer.byteLength(topic, 'utf8') + 4 > MAX_REMAINING_LENGTH) {
        throw bad(MqttErrorCode.InvalidPayload, `Invalid MQTT payload: ${size} bytes do not fit in one MQTT packet`, topic)
            .withDetails('size', size);
    }
}

/** Checks publish options and returns a copy with `qos` set; the caller's object is not touched. */
export function checkPublishOptions(topic: string, options: unknown): IClientPublishOptions {
    if (options === undefined || options === null) return { qos: 0 };
    if (!isRecord(options)) throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT publish options: must be an object', topic);
    const qos = checkQos(options.qos, topic);
    checkBoolean(options, 'retain', topic);
    checkBoolean(options, 'dup', topic);
    if (options.properties !== undefined && !isRecord(options.properties)) {
        throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT publish option properties: must be an object', topic);
    }
    const copy = { ...(options as IClientPublishOptions), qos };
    if (copy.properties) copy.properties = { ...copy.properties };
    return copy;
}

/** Checks subscribe options and returns a copy with `qos` set; the caller's object is not touched. */
export function checkSubscribeOptions(topic: string, options: unknown): IClientSubscribeOptions {
    if (options === undefined || options === null) return { qos: 0 };
    if (!isRecord(options)) throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT subscribe options: must be an object', topic);
    const qos = checkQos(options.qos, topic);
    checkBoolean(options, 'nl', topic);
    checkBoolean(options, 'rap', topic);
    if (options.rh !== undefined && options.rh !== 0 && options.rh !== 1 && options.rh !== 2) {
        throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT subscribe option rh: use 0, 1 or 2', topic);
    }
    const copy: IClientSubscribeOptions = { ...(options as Partial<IClientSubscribeOptions>), qos };
    if (copy.properties) copy.properties = { ...copy.properties };
    return copy;
}

/** The publish and subscribe options that only MQTT 5 carries. */
const MQTT5_ONLY = ['properties', 'nl', 'rap', 'rh'] as const;

/**
 * Checks that options an older protocol would drop in silence (MQTT 5 properties, and the
 * subscribe flags nl, rap and rh) come only with MQTT 5.
 */
export function checkProtocolOptions(topic: string, options: IClientPublishOptions | IClientSubscribeOptions, protocolVersion: number): void {
    if (protocolVersion === 5) return;
    const record = options as Record<string, unknown>;
    // An empty properties object carries nothing, so nothing would be lost.
    const found = MQTT5_ONLY.find((name) => record[name] !== undefined
        && !(name === 'properties' && Object.keys(record[name] as object).length === 0));
    if (found !== undefined) {
        throw bad(MqttErrorCode.InvalidOptions,
            `Invalid MQTT option ${found}: it needs MQTT 5 (options.protocol_version 5); this connection uses ${protocolVersion}`, topic);
    }
}

/** Checks that a listener has an onMessage function. */
export function checkListener(topic: string, listener: unknown): asserts listener is IMqttMessageListener {
    const onMessage = (listener as { onMessage?: unknown } | null | undefined)?.onMessage;
    if (typeof onMessage !== 'function') {
        throw bad(MqttErrorCode.InvalidListener, 'Invalid MQTT message listener: it must have an onMessage(topic, data, packet) function', topic);
    }
}

import type { IClientPublishOptions, IClientSubscribeOptions } from 'mqtt';
import { BadRequestException } from 'pip-services3-commons-nodex';

import type { IMqttMessageListener } from '../IMqttMessageListener';
import { MqttErrorCode } from './MqttErrorCode';
import { cid, NO_CID } from '../../shared/pip';
import { mqttBinaryProblem, mqttStringProblem } from '../MqttStrings';
import { checkTopicName, MAX_TOPIC_BYTES, parseFilter, type ParsedFilter } from '../MqttTopics';

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
        // Not JSON.stringify alone: it throws on a BigInt.
        const shown = typeof value === 'bigint' ? `${value}n` : JSON.stringify(value) ?? typeof value;
        throw bad(MqttErrorCode.InvalidQos, `Invalid MQTT QoS ${shown}: use 0, 1 or 2`, topic);
    }
    return value;
}

/** Checks an optional boolean option; the value is passed in (not looked up by name), as this runs for every publish. */
function checkBoolean(value: unknown, name: string, topic: string): void {
    if (value !== undefined && typeof value !== 'boolean') {
        throw bad(MqttErrorCode.InvalidOptions, `Invalid MQTT option ${name}: must be a boolean`, topic);
    }
}

/** Checks a payload: a Buffer or a string that fits in one MQTT packet (with a valid topic). */
function checkPayload(topic: string, data: unknown): void {
    let size: number;
    if (typeof data === 'string') size = Buffer.byteLength(data, 'utf8');
    else if (Buffer.isBuffer(data)) size = data.length;
    else {
        throw bad(MqttErrorCode.InvalidPayload,
            `Invalid MQTT payload: must be a Buffer or a string, not ${data === null ? 'null' : typeof data}`, topic);
    }
    // Fixed overhead: topic length prefix and packet identifier. A valid topic takes at most
    // MAX_TOPIC_BYTES, so it is counted only when the payload comes close to the limit.
    if (size + MAX_TOPIC_BYTES + 4 > MAX_REMAINING_LENGTH && size + Buffer.byteLength(topic, 'utf8') + 4 > MAX_REMAINING_LENGTH) {
        throw bad(MqttErrorCode.InvalidPayload, `Invalid MQTT payload: ${size} bytes do not fit in one MQTT packet`, topic)
            .withDetails('size', size);
    }
}

const MAX_UINT32 = 0xFFFFFFFF;
const MAX_SUBSCRIPTION_IDENTIFIER = 268435455;

/** A check of one MQTT 5 property value: a reason it is wrong, or null. */
type PropertyCheck = (value: unknown) => string | null;

const isUint = (max: number): PropertyCheck => (value) =>
    Number.isInteger(value) && (value as number) >= 0 && (value as number) <= max ? null : `must be an integer from 0 to ${max}`;
/** An MQTT UTF-8 string: see [[mqttStringProblem]]. */
function utf8StringProblem(value: unknown): string | null {
    return typeof value !== 'string' ? 'must be a string' : mqttStringProblem(value);
}
const isString: PropertyCheck = utf8StringProblem;
const isBoolean: PropertyCheck = (value) => (typeof value === 'boolean' ? null : 'must be a boolean');
const isUserProperties: PropertyCheck = (value) => {
    if (!isRecord(value)) return 'must be an object of strings or arrays of strings';
    for (const [name, entry] of Object.entries(value)) {
        const nameProblem = utf8StringProblem(name);
        if (nameProblem !== null) return `name ${nameProblem}`;
        if (typeof entry !== 'string' && !Array.isArray(entry)) return `value of '${name}' must be a string or an array of strings`;
        for (const item of typeof entry === 'string' ? [entry] : entry) {
            const problem = utf8StringProblem(item);
            if (problem !== null) return `value of '${name}' ${problem}`;
        }
    }
    return null;
};

/**
 * The MQTT 5 PUBLISH properties a client may send, with their checks. MQTT.js does not check
 * them: a bad value or an unknown name makes it drop the connection and, for QoS 1 and 2, send
 * the same packet again after every reconnect, with the publish() never settling.
 * `topicAlias` is left out: set `options.topic_alias_maximum` and the connection assigns aliases
 * (MQTT.js hangs on an alias the broker does not allow).
 */
const PUBLISH_PROPERTIES: Readonly<Record<string, PropertyCheck>> = {
    payloadFormatIndicator: isBoolean,
    messageExpiryInterval: isUint(MAX_UINT32),
    contentType: isString,
    responseTopic: (value) => {
        const problem = checkTopicName(value);
        return problem === null ? null : `must be a topic name: ${problem}`;
    },
    correlationData: (value) => (Buffer.isBuffer(value) || typeof value === 'string' ? mqttBinaryProblem(value) : 'must be a Buffer or a string'),
    userProperties: isUserProperties,
};

/** The MQTT 5 SUBSCRIBE properties a client may send. */
const SUBSCRIBE_PROPERTIES: Readonly<Record<string, PropertyCheck>> = {
    subscriptionIdentifier: (value) => (Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_SUBSCRIPTION_IDENTIFIER
        ? null : `must be an integer from 1 to ${MAX_SUBSCRIPTION_IDENTIFIER}`),
    userProperties: isUserProperties,
};

/** Checks MQTT 5 properties against the allowed names and their checks; returns a copy. */
function checkProperties(kind: string, properties: unknown, allowed: Readonly<Record<string, PropertyCheck>>, topic: string): Record<string, unknown> {
    if (!isRecord(properties)) throw bad(MqttErrorCode.InvalidOptions, `Invalid MQTT ${kind} option properties: must be an object`, topic);
    for (const [name, value] of Object.entries(properties)) {
        if (value === undefined) continue;
        const check = allowed[name];
        if (check === undefined) {
            throw bad(MqttErrorCode.InvalidOptions,
                `Invalid MQTT ${kind} property ${name}: not one a client may send (allowed: ${Object.keys(allowed).join(', ')})`, topic);
        }
        const problem = check(value);
        if (problem !== null) throw bad(MqttErrorCode.InvalidOptions, `Invalid MQTT ${kind} property ${name}: ${problem}`, topic);
    }
    return { ...properties };
}

/** The options of a publish given none: QoS 0 and nothing else (MQTT.js copies what it is given, so one object serves all). */
export const QOS_0: IClientPublishOptions = Object.freeze({ qos: 0 });

/**
 * Checks publish options and returns them with `qos` set: the caller's object itself when it
 * already has a valid `qos` and no properties (MQTT.js copies the options it is given), otherwise
 * a copy. The caller's object is never changed.
 */
function checkPublishOptions(topic: string, options: unknown): IClientPublishOptions {
    if (options === undefined || options === null) return QOS_0;
    if (!isRecord(options)) throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT publish options: must be an object', topic);
    const qos = checkQos(options.qos, topic);
    checkBoolean(options.retain, 'retain', topic);
    checkBoolean(options.dup, 'dup', topic);
    // MQTT.js puts the properties object itself into the packet (and writes a topic alias into it).
    if (options.qos === qos && options.properties === undefined) return options;
    const copy = { ...(options as IClientPublishOptions), qos };
    if (options.properties !== undefined) {
        copy.properties = checkProperties('publish', options.properties, PUBLISH_PROPERTIES, topic);
    }
    return copy;
}

/** Checks subscribe options and returns a copy with `qos` set; the caller's object is not touched. */
function checkSubscribeOptions(topic: string, options: unknown): IClientSubscribeOptions {
    if (options === undefined || options === null) return { qos: 0 };
    if (!isRecord(options)) throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT subscribe options: must be an object', topic);
    const qos = checkQos(options.qos, topic);
    checkBoolean(options.nl, 'nl', topic);
    checkBoolean(options.rap, 'rap', topic);
    if (options.rh !== undefined && options.rh !== 0 && options.rh !== 1 && options.rh !== 2) {
        throw bad(MqttErrorCode.InvalidOptions, 'Invalid MQTT subscribe option rh: use 0, 1 or 2', topic);
    }
    const copy: IClientSubscribeOptions = { ...(options as Partial<IClientSubscribeOptions>), qos };
    if (options.properties !== undefined) {
        copy.properties = checkProperties('subscribe', options.properties, SUBSCRIBE_PROPERTIES, topic);
    }
    return copy;
}

/**
 * Checks that options an older protocol would drop in silence (MQTT 5 properties, and the
 * subscribe flags nl, rap and rh) come only with MQTT 5. (Each option read by name, not in a
 * loop over names: this runs for every publish.)
 */
export function checkProtocolOptions(topic: string, options: IClientPublishOptions | IClientSubscribeOptions, protocolVersion: number): void {
    if (protocolVersion === 5) return;
    const { properties, nl, rap, rh } = options as Partial<IClientSubscribeOptions>;
    // An empty properties object carries nothing, so nothing would be lost.
    const found = properties !== undefined && Object.keys(properties).length > 0 ? 'properties'
        : nl !== undefined ? 'nl' : rap !== undefined ? 'rap' : rh !== undefined ? 'rh' : null;
    if (found !== null) {
        throw bad(MqttErrorCode.InvalidOptions,
            `Invalid MQTT option ${found}: it needs MQTT 5 (options.protocol_version 5); this connection uses ${protocolVersion}`, topic);
    }
}

/** Checks that a listener has an onMessage function. */
function checkListener(topic: string, listener: unknown): asserts listener is IMqttMessageListener {
    const onMessage = (listener as { onMessage?: unknown } | null | undefined)?.onMessage;
    if (typeof onMessage !== 'function') {
        throw bad(MqttErrorCode.InvalidListener, 'Invalid MQTT message listener: it must have an onMessage(topic, data, packet) function', topic);
    }
}

/**
 * Checks the arguments of a publish(): a topic name, a payload that fits in one packet, and the
 * options, returned with `qos` set (see checkPublishOptions).
 * @throws BadRequestException `MQTT_INVALID_TOPIC`, `MQTT_INVALID_PAYLOAD`, `MQTT_INVALID_QOS` or `MQTT_INVALID_OPTIONS`.
 */
export function checkPublishArguments(topic: string, data: unknown, options: unknown): IClientPublishOptions {
    const topicError = checkTopicName(topic);
    if (topicError != null) throw bad(MqttErrorCode.InvalidTopic, `Invalid MQTT topic: ${topicError}`, topic);
    checkPayload(topic, data);
    return checkPublishOptions(topic, options);
}

/**
 * Checks the arguments of a subscribe(): a topic filter, the options (returned as a copy with
 * `qos` set) and the listener.
 * @throws BadRequestException `MQTT_INVALID_FILTER`, `MQTT_INVALID_QOS`, `MQTT_INVALID_OPTIONS` or `MQTT_INVALID_LISTENER`.
 */
export function checkSubscribeArguments(topic: string, options: unknown, listener: unknown): { parsed: ParsedFilter; options: IClientSubscribeOptions } {
    const parsed = parseFilter(topic);
    if (typeof parsed === 'string') throw bad(MqttErrorCode.InvalidFilter, `Invalid MQTT topic filter: ${parsed}`, topic);
    const checked = checkSubscribeOptions(topic, options);
    checkListener(topic, listener);
    return { parsed, options: checked };
}

/** @throws BadRequestException `MQTT_INVALID_ARGUMENT` with the message unless `valid`. */
export function checkArgument(correlationId: string | null, valid: boolean, message: () => string): void {
    if (!valid) throw new BadRequestException(cid(correlationId), MqttErrorCode.InvalidArgument, message());
}

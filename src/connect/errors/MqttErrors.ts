import { ApplicationException, ConfigException, ConnectionException, InvalidStateException } from 'pip-services3-commons-nodex';

import { cid, NO_CID } from '../../shared/pip';
import { MqttErrorCode } from './MqttErrorCode';

/**
 * The MQTT reason code an MQTT.js error carries: its numeric `code`, or the failure code in
 * the acknowledgement packet attached to it (SUBACK `granted`, UNSUBACK or PUBACK `reasonCode`).
 */
export function reasonCodeOf(err: unknown): number | undefined {
    if (typeof err !== 'object' || err === null) return undefined;
    const { code, packet } = err as { code?: unknown; packet?: { granted?: unknown; reasonCode?: unknown } };
    if (typeof code === 'number') return code;
    const codes = packet?.granted ?? packet?.reasonCode;
    const list: unknown[] = Array.isArray(codes) ? codes : [codes];
    return list.find((c): c is number => typeof c === 'number' && (c & 0x80) !== 0);
}

/**
 * The MQTT 5 reason string of an acknowledgement: of the packet given, or of the one MQTT.js
 * attached to the error. Undefined when the broker sent none.
 */
export function reasonStringOf(err: unknown, packet?: unknown): string | undefined {
    const ack = packet ?? (err as { packet?: unknown } | null)?.packet;
    const reason = (ack as { properties?: { reasonString?: unknown } } | null | undefined)?.properties?.reasonString;
    return typeof reason === 'string' && reason !== '' ? reason : undefined;
}

/** The value a throw or rejection gave, as an Error (non-Error values become one with their text). */
export function toError(err: unknown): Error {
    return err instanceof Error ? err : new Error(String(err));
}

/**
 * Turns an MQTT.js error into a ConnectionException with the given code, the topic, the
 * reason code and (MQTT 5) the broker's reason string in its details. Our own exceptions pass
 * through unchanged.
 *
 * @param packet the acknowledgement MQTT.js passed beside the error, when it did.
 */
export function wrapMqttError(err: unknown, code: string, message: string, topic: string, packet?: unknown): ApplicationException {
    if (err instanceof ApplicationException) return err;
    const cause = toError(err);
    const reasonString = reasonStringOf(cause, packet);
    const text = `${message}: ${cause.message}${reasonString !== undefined ? ` (${reasonString})` : ''}`;
    const wrapped = new ConnectionException(NO_CID, code, text).withCause(cause).withDetails('topic', topic);
    const reasonCode = reasonCodeOf(cause);
    if (reasonCode !== undefined) wrapped.withDetails('reason_code', reasonCode);
    if (reasonString !== undefined) wrapped.withDetails('reason_string', reasonString);
    return wrapped;
}

/** A broker refusal: a failure reason code in an acknowledgement, and its reason string when the broker gave one. */
export function brokerRefusal(code: string, message: string, topic: string, reasonCode: number, reasonString?: string): ConnectionException {
    const reason = reasonString !== undefined ? `reason code ${reasonCode}: ${reasonString}` : `reason code ${reasonCode}`;
    const error = new ConnectionException(NO_CID, code, `${message} (${reason})`)
        .withDetails('topic', topic).withDetails('reason_code', reasonCode);
    if (reasonString !== undefined) error.withDetails('reason_string', reasonString);
    return error;
}

/** The error pending operations get when the connection is closed under them. */
export function closedError(correlationId: string): InvalidStateException {
    return new InvalidStateException(correlationId, MqttErrorCode.Closed, 'MQTT connection was closed');
}

/** The error of an open() that a close() ended; `what` names the component ("MQTT connection", "MQTT queue jobs"). */
export function closedWhileOpening(correlationId: string | null, what: string): InvalidStateException {
    return new InvalidStateException(cid(correlationId), MqttErrorCode.Closed, `${what} was closed while opening`);
}

/**
 * A value given twice with different values (in the uri and as its own key, in a credential
 * store and beside its store_key, ...). The message names the key, never the values: they may be secrets.
 */
export function configConflict(correlationId: string | null, key: string, message: string): ConfigException {
    return new ConfigException(cid(correlationId), MqttErrorCode.ConflictingConfig, `MQTT configuration conflict at ${key}: ${message}`)
        .withDetails('key', key);
}

/** A configuration value that cannot be used: `MQTT_BAD_OPTION`, naming the key (never the value: it may be a secret). */
export function badOption(correlationId: string | null, key: string, message: string): ConfigException {
    return new ConfigException(cid(correlationId), MqttErrorCode.BadOption, `MQTT option ${key} ${message}`)
        .withDetails('key', key);
}

/**
 * `MQTT_POISON_PACKET`: the broker closed the connection `closes` times in a row on a PUBLISH
 * (`what` 'publish') or SUBSCRIBE ('subscribe') before answering it.
 */
export function poisonPacket(displayUri: string, what: 'publish' | 'subscribe', topic: string, closes: number): ConnectionException {
    const outcome = what === 'publish'
        ? 'it is taken out of what is sent again after a reconnect, and may not have been delivered'
        : 'it is not sent again, and its listeners are removed';
    return new ConnectionException(NO_CID, MqttErrorCode.PoisonPacket,
        `MQTT broker at ${displayUri} closed the connection ${closes} times in a row on the ${what === 'publish' ? 'PUBLISH to' : 'SUBSCRIBE to'} ` +
        `${topic}, each time before answering it (a malformed topic, a packet over its size limit, a topic it refuses): ${outcome}`)
        .withDetails('topic', topic).withDetails('packet', what).withDetails('closes', closes);
}

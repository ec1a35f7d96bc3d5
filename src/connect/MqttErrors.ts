import { ApplicationException, ConnectionException, InvalidStateException } from 'pip-services3-commons-nodex';

import { NO_CID } from './correlation';
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
 * Turns an MQTT.js error into a ConnectionException with the given code, the topic and the
 * reason code in its details. Our own exceptions pass through unchanged.
 */
export function wrapMqttError(err: unknown, code: string, message: string, topic: string): ApplicationException {
    if (err instanceof ApplicationException) return err;
    const cause = err instanceof Error ? err : new Error(String(err));
    const wrapped = new ConnectionException(NO_CID, code, `${message}: ${cause.message}`).withCause(cause).withDetails('topic', topic);
    const reasonCode = reasonCodeOf(cause);
    if (reasonCode !== undefined) wrapped.withDetails('reason_code', reasonCode);
    return wrapped;
}

/** A broker refusal: a failure reason code in an acknowledgement. */
export function brokerRefusal(code: string, message: string, topic: string, reasonCode: number): ConnectionException {
    return new ConnectionException(NO_CID, code, `${message} (reason code ${reasonCode})`)
        .withDetails('topic', topic).withDetails('reason_code', reasonCode);
}

/** The error pending operations get when the connection is closed under them. */
export function closedError(correlationId: string): InvalidStateException {
    return new InvalidStateException(correlationId, MqttErrorCode.Closed, 'MQTT connection was closed');
}

import type { IConnackPacket, MqttClient, Packet } from 'mqtt';
import { ConnectionException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../errors/MqttErrorCode';
import { reasonStringOf, toError } from '../errors/MqttErrors';
import { cid } from '../../shared/pip';

/** What [[waitForConnack]] needs to know. */
export interface ConnackWait {
    readonly correlationId: string | null;
    /** The broker addresses, for error messages (no credentials). */
    readonly displayUri: string;
    /** The deadline in milliseconds. */
    readonly connectTimeout: number;
    /** Keep trying (MQTT.js reconnects) until the deadline, or fail once `attempts` attempts were lost. */
    readonly retry: boolean;
    /** Without retry: how many attempts to make (one per failover server). */
    readonly attempts: number;
    /** Aborts the wait with its reason (a close() meanwhile). */
    readonly signal: AbortSignal;
}

/**
 * Waits for a new client's first CONNACK. Resolves on success; rejects once:
 * - at once with `MQTT_CONNECT_REFUSED` when the broker refuses (bad credentials, ...);
 * - with `MQTT_TLS_FAILED` when the TLS handshake fails: at once with one server, otherwise as
 *   the last error of the attempts (another failover server may still accept us);
 * - with `MQTT_CONNECT_FAILED` when `retry` is off and every server (one attempt each) failed;
 * - at the deadline with `MQTT_CONNECT_FAILED` (the broker could not be reached) or
 *   `MQTT_CONNECT_TIMEOUT` (it did not answer).
 * The caller ends the client after a rejection.
 */
export function waitForConnack(client: MqttClient, wait: ConnackWait): Promise<void> {
    const { correlationId, displayUri, connectTimeout } = wait;
    return new Promise<void>((resolve, reject) => {
        let lastError: Error | null = null;
        let attemptFailed = false;
        let attemptsLost = 0;

        const failure = (): ConnectionException => {
            if (lastError == null || lastError.message === 'connack timeout') {
                return new ConnectionException(cid(correlationId), MqttErrorCode.ConnectTimeout,
                    `MQTT broker at ${displayUri} did not accept the connection within ${connectTimeout} ms`)
                    .withDetails('timeout', connectTimeout);
            }
            const tlsCode = tlsFailureOf(lastError);
            if (tlsCode !== undefined) return tlsFailed(lastError, tlsCode);
            return new ConnectionException(cid(correlationId), MqttErrorCode.ConnectFailed,
                `Cannot connect to MQTT broker at ${displayUri}: ${lastError.message}`)
                .withCause(lastError);
        };
        const tlsFailed = (err: Error, tlsCode: string): ConnectionException =>
            new ConnectionException(cid(correlationId), MqttErrorCode.TlsFailed,
                `TLS handshake with MQTT broker at ${displayUri} failed: ${err.message} (${tlsCode})`)
                .withCause(err).withDetails('tls_code', tlsCode);
        const settle = (err: Error | null): void => {
            clearTimeout(timer);
            wait.signal.removeEventListener('abort', onAbort);
            client.off('connect', onConnect);
            client.off('error', onError);
            client.off('close', onClose);
            client.off('packetreceive', onPacket);
            if (err) reject(err);
            else resolve();
        };
        const onConnect = (): void => settle(null);
        // MQTT.js reports a refusal without the CONNACK; its MQTT 5 reason string is in the packet.
        let connack: IConnackPacket | null = null;
        const onPacket = (packet: Packet): void => {
            if (packet.cmd === 'connack') connack = packet;
        };
        const onError = (err: Error & { code?: unknown }): void => {
            if (typeof err.code === 'number') {
                // A CONNACK with a failure code: MQTT.js does not retry, and neither do we.
                const reasonString = reasonStringOf(null, connack);
                const reason = `reason code ${err.code}${reasonString !== undefined ? `: ${reasonString}` : ''}`;
                const refused = new ConnectionException(cid(correlationId), MqttErrorCode.ConnectRefused,
                    `MQTT broker at ${displayUri} refused the connection: ${err.message} (${reason})`)
                    .withCause(err).withDetails('reason_code', err.code);
                if (reasonString !== undefined) refused.withDetails('reason_string', reasonString);
                settle(refused);
                return;
            }
            lastError = err;
            attemptFailed = true;
            // Retrying cannot make an untrusted certificate trusted: one server fails at once.
            const tlsCode = tlsFailureOf(err);
            if (tlsCode !== undefined && wait.attempts === 1) settle(tlsFailed(err, tlsCode));
        };
        const onClose = (): void => {
            // A socket closed without an error: the peer hung up before CONNACK.
            if (!attemptFailed) {
                // A broker that cannot parse an MQTT 5 CONNECT may hang up rather than answer code 1 (RabbitMQ 3.x does).
                lastError = new Error(client.options.protocolVersion === 5
                    ? 'the connection was closed before CONNACK (with options.protocol_version 5: a broker without MQTT 5 may hang up ' +
                      'like this; try protocol_version 4)'
                    : 'the connection was closed before CONNACK');
            }
            attemptFailed = false;
            attemptsLost++;
            if (!wait.retry && attemptsLost >= wait.attempts) settle(failure());
        };
        const onAbort = (): void => settle(toError(wait.signal.reason));
        const timer = setTimeout(() => settle(failure()), connectTimeout);

        client.on('connect', onConnect);
        client.on('error', onError);
        client.on('close', onClose);
        client.on('packetreceive', onPacket);
        if (wait.signal.aborted) onAbort();
        else wait.signal.addEventListener('abort', onAbort);
    });
}

/**
 * OpenSSL's certificate verification results, as Node reports them in `err.code`
 * (see X509_verify_cert_error_string), plus the host name check.
 */
const CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
    'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
    'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID',
    'CERT_HAS_EXPIRED', 'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD',
    'ERROR_IN_CRL_LAST_UPDATE_FIELD', 'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA',
    'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * The TLS failure an error reports, as its code (`SELF_SIGNED_CERT_IN_CHAIN`,
 * `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`, ...), or undefined when it is not a TLS failure:
 * the broker's certificate was not trusted, or either side refused the handshake.
 */
function tlsFailureOf(err: unknown): string | undefined {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code !== 'string') return undefined;
    // EPROTO: a TLS 1.2 handshake ended by an alert (a required client certificate missing, say).
    return CERTIFICATE_ERRORS.has(code) || /^ERR_(SSL|TLS)_/.test(code) || code === 'EPROTO' ? code : undefined;
}

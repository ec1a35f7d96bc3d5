import { readFile } from 'node:fs/promises';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';

import { ConfigException } from 'pip-services3-commons-nodex';

import { cid } from './correlation';
import { MqttErrorCode } from './MqttErrorCode';

/**
 * The TLS settings as configured (in `credential.*`, from config or a credential store):
 * file paths and the key's passphrase. Each field remembers its configuration key for errors.
 */
export interface MqttTlsSources {
    readonly caFile?: string;
    readonly certFile?: string;
    /** The key that named the certificate file: `credential.ssl_crt_file` or its alias `credential.ssl_cert_file`. */
    readonly certKey?: string;
    readonly keyFile?: string;
    readonly passphrase?: string;
}

/** The TLS options handed to MQTT.js (and through it to `tls.connect` or the WebSocket). */
export interface MqttTlsOptions {
    ca?: Buffer;
    cert?: Buffer;
    key?: Buffer;
    passphrase?: string;
    servername?: string;
    rejectUnauthorized: boolean;
}

/** True when any TLS file or the passphrase is configured. */
export function hasTlsSources(sources: MqttTlsSources): boolean {
    return sources.caFile !== undefined || sources.certFile !== undefined || sources.keyFile !== undefined
        || sources.passphrase !== undefined;
}

/**
 * Reads and checks the TLS files: each must be readable and hold what its key says, the key
 * must match the certificate, and the passphrase must decrypt the key. Errors name the key at
 * fault and the file, never the passphrase or the file's content.
 *
 * @throws ConfigException `MQTT_BAD_TLS` with details.key.
 */
export async function loadTls(
    correlationId: string | null, sources: MqttTlsSources, serverName: string | undefined, rejectUnauthorized: boolean,
): Promise<MqttTlsOptions> {
    const certKey = sources.certKey ?? 'credential.ssl_crt_file';
    if (sources.certFile !== undefined && sources.keyFile === undefined) {
        throw badTls(correlationId, 'credential.ssl_key_file', `is needed with ${certKey}: a client certificate needs its private key`);
    }
    if (sources.keyFile !== undefined && sources.certFile === undefined) {
        throw badTls(correlationId, certKey, 'is needed with credential.ssl_key_file: a private key needs its client certificate');
    }
    if (sources.passphrase !== undefined && sources.keyFile === undefined) {
        throw badTls(correlationId, 'credential.ssl_passphrase', 'is set but credential.ssl_key_file is not: it decrypts that key');
    }

    const options: MqttTlsOptions = { rejectUnauthorized };
    if (serverName !== undefined) options.servername = serverName;
    if (sources.caFile !== undefined) {
        options.ca = await read(correlationId, 'credential.ssl_ca_file', sources.caFile);
        checkCertificates(correlationId, 'credential.ssl_ca_file', sources.caFile, options.ca);
    }
    if (sources.certFile !== undefined && sources.keyFile !== undefined) {
        options.cert = await read(correlationId, certKey, sources.certFile);
        checkCertificates(correlationId, certKey, sources.certFile, options.cert);
        options.key = await read(correlationId, 'credential.ssl_key_file', sources.keyFile);
        checkKey(correlationId, sources, options.key);
        if (sources.passphrase !== undefined) options.passphrase = sources.passphrase;
        try {
            createSecureContext({ cert: options.cert, key: options.key, passphrase: sources.passphrase });
        } catch (err) {
            throw badTls(correlationId, 'credential.ssl_key_file',
                `(${sources.keyFile}) does not match the certificate in ${certKey} (${sources.certFile})`, err);
        }
    }
    return options;
}

async function read(correlationId: string | null, key: string, file: string): Promise<Buffer> {
    try {
        return await readFile(file);
    } catch (err) {
        const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        throw badTls(correlationId, key, `file ${file} cannot be read (${reason})`, err);
    }
}

const CERTIFICATE_PEM = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Checks that a file holds one or more PEM certificates, each of which parses. */
function checkCertificates(correlationId: string | null, key: string, file: string, content: Buffer): void {
    const blocks = content.toString('latin1').match(CERTIFICATE_PEM) ?? [];
    if (blocks.length === 0) {
        throw badTls(correlationId, key, `file ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    }
    blocks.forEach((block, i) => {
        try {
            new X509Certificate(block);
        } catch (err) {
            throw badTls(correlationId, key, `file ${file}: certificate ${i + 1} cannot be parsed`, err);
        }
    });
}

/** Checks that the key file holds a private key that the passphrase (if any) decrypts. */
function checkKey(correlationId: string | null, sources: MqttTlsSources, content: Buffer): void {
    try {
        createPrivateKey({ key: content, format: 'pem', passphrase: sources.passphrase });
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        const encrypted = /ENCRYPTED/.test(content.toString('latin1'));
        if (encrypted && sources.passphrase === undefined) {
            throw badTls(correlationId, 'credential.ssl_passphrase',
                `is needed: the private key in credential.ssl_key_file (${sources.keyFile}) is encrypted`, err);
        }
        if (encrypted || code === 'ERR_OSSL_BAD_DECRYPT') {
            // Never the passphrase itself, only that it is wrong.
            throw badTls(correlationId, 'credential.ssl_passphrase',
                `does not decrypt the private key in credential.ssl_key_file (${sources.keyFile})`, err);
        }
        throw badTls(correlationId, 'credential.ssl_key_file', `file ${sources.keyFile} holds no usable PEM private key`, err);
    }
}

function badTls(correlationId: string | null, key: string, message: string, cause?: unknown): ConfigException {
    const error = new ConfigException(cid(correlationId), MqttErrorCode.BadTls, `MQTT TLS setting ${key} ${message}`)
        .withDetails('key', key);
    if (cause instanceof Error) error.withCause(cause);
    return error;
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
export function tlsFailureOf(err: unknown): string | undefined {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code !== 'string') return undefined;
    // EPROTO: a TLS 1.2 handshake ended by an alert (a required client certificate missing, say).
    return CERTIFICATE_ERRORS.has(code) || /^ERR_(SSL|TLS)_/.test(code) || code === 'EPROTO' ? code : undefined;
}

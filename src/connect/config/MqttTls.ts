import { readFile } from 'node:fs/promises';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';

import { ConfigException } from 'pip-services3-commons-nodex';

import { cid } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';

/**
 * The TLS settings as configured (in a credential, from config or a credential store): file
 * paths and the key's passphrase, with what errors need to name their configuration keys.
 */
export interface MqttTlsSources {
    /** The credential's configuration key: `credential` or `credentials.N`. */
    readonly prefix: string;
    /** The name the certificate file was given under: `ssl_crt_file` or its alias `ssl_cert_file`. */
    readonly certName: 'ssl_crt_file' | 'ssl_cert_file';
    readonly caFile?: string;
    readonly certFile?: string;
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

/** The configuration key of the first TLS file or passphrase configured, or undefined when none is. */
export function firstTlsKey(sources: MqttTlsSources): string | undefined {
    const name = sources.caFile !== undefined ? 'ssl_ca_file' : sources.certFile !== undefined ? sources.certName
        : sources.keyFile !== undefined ? 'ssl_key_file' : sources.passphrase !== undefined ? 'ssl_passphrase' : undefined;
    return name === undefined ? undefined : `${sources.prefix}.${name}`;
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
    const caKey = `${sources.prefix}.ssl_ca_file`;
    const certKey = `${sources.prefix}.${sources.certName}`;
    const keyKey = `${sources.prefix}.ssl_key_file`;
    const passphraseKey = `${sources.prefix}.ssl_passphrase`;
    if (sources.certFile !== undefined && sources.keyFile === undefined) {
        throw badTls(correlationId, keyKey, `is needed with ${certKey}: a client certificate needs its private key`);
    }
    if (sources.keyFile !== undefined && sources.certFile === undefined) {
        throw badTls(correlationId, certKey, `is needed with ${keyKey}: a private key needs its client certificate`);
    }
    if (sources.passphrase !== undefined && sources.keyFile === undefined) {
        throw badTls(correlationId, passphraseKey, `is set but ${keyKey} is not: it decrypts that key`);
    }

    const options: MqttTlsOptions = { rejectUnauthorized };
    if (serverName !== undefined) options.servername = serverName;
    if (sources.caFile !== undefined) {
        options.ca = await read(correlationId, caKey, sources.caFile);
        checkCertificates(correlationId, caKey, sources.caFile, options.ca);
    }
    if (sources.certFile !== undefined && sources.keyFile !== undefined) {
        options.cert = await read(correlationId, certKey, sources.certFile);
        checkCertificates(correlationId, certKey, sources.certFile, options.cert);
        options.key = await read(correlationId, keyKey, sources.keyFile);
        checkKey(correlationId, sources, options.key, keyKey, passphraseKey);
        if (sources.passphrase !== undefined) options.passphrase = sources.passphrase;
        try {
            createSecureContext({ cert: options.cert, key: options.key, passphrase: sources.passphrase });
        } catch (err) {
            throw badTls(correlationId, keyKey, `(${sources.keyFile}) does not match the certificate in ${certKey} (${sources.certFile})`, err);
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

/**
 * Checks that the key file holds a private key that the passphrase decrypts, and that a
 * passphrase comes with an encrypted key only (otherwise the wrong key file is likely configured).
 */
function checkKey(correlationId: string | null, sources: MqttTlsSources, content: Buffer, keyKey: string, passphraseKey: string): void {
    const encrypted = /ENCRYPTED/.test(content.toString('latin1'));
    try {
        createPrivateKey({ key: content, format: 'pem', passphrase: sources.passphrase });
    } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (encrypted && sources.passphrase === undefined) {
            throw badTls(correlationId, passphraseKey, `is needed: the private key in ${keyKey} (${sources.keyFile}) is encrypted`, err);
        }
        if (encrypted || code === 'ERR_OSSL_BAD_DECRYPT') {
            // Never the passphrase itself, only that it is wrong.
            throw badTls(correlationId, passphraseKey, `does not decrypt the private key in ${keyKey} (${sources.keyFile})`, err);
        }
        throw badTls(correlationId, keyKey, `file ${sources.keyFile} holds no usable PEM private key`, err);
    }
    if (!encrypted && sources.passphrase !== undefined) {
        throw badTls(correlationId, passphraseKey, `is set, but the private key in ${keyKey} (${sources.keyFile}) is not encrypted`);
    }
}

function badTls(correlationId: string | null, key: string, message: string, cause?: unknown): ConfigException {
    const error = new ConfigException(cid(correlationId), MqttErrorCode.BadTls, `MQTT TLS setting ${key} ${message}`)
        .withDetails('key', key);
    if (cause instanceof Error) error.withCause(cause);
    return error;
}

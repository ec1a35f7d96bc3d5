// Certificates for TLS tests: made with the openssl CLI in a temp folder, once per process.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The passphrase of {@link TestCertificates.client}'s `keyEncrypted`. */
export const CLIENT_KEY_PASSPHRASE = 'test-passphrase';

/** Validity of every certificate made here, in days. */
const DAYS = '7';

/** A PEM file: where it is (absolute path) and what it holds. */
export interface PemFile {
    readonly path: string;
    readonly pem: string;
}

/** A certificate and its private key (unencrypted PKCS#8 PEM). */
export interface CertifiedKey {
    readonly cert: PemFile;
    readonly key: PemFile;
}

/**
 * Everything a TLS test needs. Keys are EC P-256. Server certificates name `DNS:localhost` and
 * `IP:127.0.0.1`, so Node and Mosquitto clients verify them for either host.
 */
export interface TestCertificates {
    /** The folder holding every file; removed when the process exits. */
    readonly dir: string;
    /** A self-signed test CA: trust `ca.cert` to accept `server`; it also signed `client`. */
    readonly ca: CertifiedKey;
    /** A server certificate (serverAuth) signed by `ca`. */
    readonly server: CertifiedKey;
    /** A second CA, unrelated to `ca`. */
    readonly otherCa: CertifiedKey;
    /** A server certificate signed by `otherCa`: untrusted for a client that trusts `ca` only. */
    readonly otherServer: CertifiedKey;
    /**
     * A client certificate (clientAuth, CN `test-client`) signed by `ca`; `keyEncrypted` is the
     * same key as encrypted PKCS#8 (AES-256-CBC) under {@link CLIENT_KEY_PASSPHRASE}.
     */
    readonly client: CertifiedKey & { readonly keyEncrypted: PemFile };
    /** A client certificate signed by `otherCa`: refused by a server that trusts `ca` only. */
    readonly otherClient: CertifiedKey;
    /** A self-signed server certificate (no CA), with the same names as `server`. */
    readonly selfSigned: CertifiedKey;
    /** A server certificate signed by `ca` that names only IP 127.0.0.1 (not localhost). */
    readonly ipOnlyServer: CertifiedKey;
}

const SERVER_EXTENSIONS = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
];

const CLIENT_EXTENSIONS = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
];

const CA_EXTENSIONS = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];

let made: TestCertificates | undefined;

/**
 * The test certificates, made on the first call (a few openssl runs, well under a second) in a
 * fresh folder under the OS temp folder, which is removed when the process exits. Later calls
 * return the same files. Throws when the `openssl` CLI is missing or fails.
 */
export function testCertificates(): TestCertificates {
    made ??= makeCertificates();
    return made;
}

function makeCertificates(): TestCertificates {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-certs-'));
    fs.chmodSync(dir, 0o755);
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    const file = (name: string): string => path.join(dir, name);
    const openssl = (...args: string[]): void => {
        try {
            execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
        } catch (err) {
            const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
            throw new Error(`openssl ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}`, { cause: err });
        }
    };
    const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

    /** A self-signed certificate (a CA unless other extensions are given). */
    const selfSigned = (name: string, subject: string, extensions: string[]): void => {
        const addext = extensions.flatMap((ext) => ['-addext', ext]);
        openssl('req', '-x509', ...newKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`),
            '-days', DAYS, '-subj', subject, ...addext);
    };
    /** A key and a certificate for it signed by the CA `issuer`. */
    const signed = (name: string, subject: string, issuer: string, extensions: string[]): void => {
        fs.writeFileSync(file(`${name}.ext`), extensions.join('\n') + '\n');
        openssl('req', '-new', ...newKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject);
        openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${issuer}.crt`), '-CAkey', file(`${issuer}.key`),
            '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', DAYS, '-extfile', file(`${name}.ext`),
            '-out', file(`${name}.crt`));
    };

    selfSigned('ca', '/CN=pip-mqtt test CA', CA_EXTENSIONS);
    selfSigned('other-ca', '/CN=pip-mqtt other test CA', CA_EXTENSIONS);
    signed('server', '/CN=localhost', 'ca', SERVER_EXTENSIONS);
    signed('other-server', '/CN=localhost', 'other-ca', SERVER_EXTENSIONS);
    signed('client', '/CN=test-client', 'ca', CLIENT_EXTENSIONS);
    signed('other-client', '/CN=other-client', 'other-ca', CLIENT_EXTENSIONS);
    selfSigned('self-signed', '/CN=localhost', SERVER_EXTENSIONS);
    signed('ip-server', '/CN=127.0.0.1', 'ca', [...SERVER_EXTENSIONS.filter((e) => !e.startsWith('subjectAltName')), 'subjectAltName=IP:127.0.0.1']);
    openssl('pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', file('client.key'), '-out', file('client-encrypted.key'),
        '-passout', `pass:${CLIENT_KEY_PASSPHRASE}`);

    const pem = (name: string): PemFile => {
        const filePath = file(name);
        // The spawned Mosquitto may run as another user (see mosquitto.ts): everything readable.
        fs.chmodSync(filePath, 0o644);
        return { path: filePath, pem: fs.readFileSync(filePath, 'utf8') };
    };
    const pair = (name: string): CertifiedKey => ({ cert: pem(`${name}.crt`), key: pem(`${name}.key`) });
    return {
        dir,
        ca: pair('ca'),
        server: pair('server'),
        otherCa: pair('other-ca'),
        otherServer: pair('other-server'),
        client: { ...pair('client'), keyEncrypted: pem('client-encrypted.key') },
        otherClient: pair('other-client'),
        selfSigned: pair('self-signed'),
        ipOnlyServer: pair('ip-server'),
    };
}

// Configuration fuzzing: hundreds of seeded, generated MqttConnection configurations, valid and
// invalid, each opened and closed against real embedded brokers, one after another. open() must
// resolve, or reject with a Pip.Services exception carrying an MQTT_* code, within its
// connect_timeout (and a margin); a rejection of a case with one known bad key names that key;
// close() leaves no socket or timer of the connection behind; nothing throws out of band.
//
// The seed is fixed so CI is repeatable. FUZZ_SEED (decimal or 0x hex) and FUZZ_CASES change the
// seed and the case count; FUZZ_ONLY (case numbers, comma-separated) runs only those cases of
// the seed, to reproduce a failure. Each case is generated from the seed and its number alone.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { ApplicationException, ConfigException, ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { delay, refusedPort } from '../helpers/brokers';
import { CLIENT_KEY_PASSPHRASE, testCertificates } from '../helpers/certs';
import { fixture } from '../helpers/fixture';

// ---------------------------------------------------------------- seed and case count

const DEFAULT_SEED = 0x5eed_c0f1;
const DEFAULT_CASES = 400;

function envInteger(name: string, fallback: number): number {
    const text = process.env[name]?.trim();
    if (text === undefined || text === '') return fallback;
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a whole number (decimal or 0x hex), not '${text}'`);
    return value;
}

const SEED = envInteger('FUZZ_SEED', DEFAULT_SEED) >>> 0;
const CASES = envInteger('FUZZ_CASES', DEFAULT_CASES);
const ONLY: ReadonlySet<number> | null = process.env.FUZZ_ONLY
    ? new Set(process.env.FUZZ_ONLY.split(',').map((n) => Number(n.trim())).filter((n) => Number.isInteger(n)))
    : null;

// ---------------------------------------------------------------- a seeded PRNG (mulberry32)

class Rng {
    private _state: number;

    public constructor(seed: number) {
        this._state = seed >>> 0;
    }

    /** A number in [0, 1). */
    public next(): number {
        this._state = (this._state + 0x6d2b79f5) >>> 0;
        let t = this._state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    }

    /** An integer in [min, max]. */
    public int(min: number, max: number): number {
        return min + Math.floor(this.next() * (max - min + 1));
    }

    public chance(p: number): boolean {
        return this.next() < p;
    }

    public pick<T>(items: readonly T[]): T {
        return items[Math.floor(this.next() * items.length)];
    }

    public hex(digits: number): string {
        let text = '';
        while (text.length < digits) text += this.int(0, 15).toString(16);
        return text;
    }
}

/** The generator of case `index`: from the seed and the index alone, so one case reproduces without the others. */
function caseRng(index: number): Rng {
    return new Rng(SEED ^ Math.imul(index + 1, 0x9e3779b1));
}

// ---------------------------------------------------------------- codes

const E = MqttErrorCode;
const ALL_CODES: readonly string[] = Object.values(MqttErrorCode);
/** The codes of ConfigException (see MqttErrorCode). */
const CONFIG_CODES: readonly string[] = [
    E.NoConnection, E.NoHost, E.BadPort, E.UnknownProtocol, E.BadUri, E.ConflictingConfig, E.BadOption, E.ResolveFailed,
    E.NoTopic, E.BadReference, E.BadTls,
];
const NET_CODES: readonly string[] = [E.ConnectFailed, E.ConnectTimeout];

// ---------------------------------------------------------------- the brokers and files a case can point at

interface FuzzEnv {
    readonly host: string;
    /** Aedes on MQTT over TCP. */
    readonly tcpPort: number;
    /** Aedes on MQTT over WebSocket (path /mqtt). */
    readonly wsPort: number;
    /** Aedes on MQTT over TLS, with a certificate signed by the test CA for 127.0.0.1 and localhost. */
    readonly tlsPort: number;
    /** A server that accepts and never answers. */
    readonly silentPort: number;
    /** A port where nothing listens: a listener bound it and closed. */
    readonly closedPort: number;
    readonly files: {
        readonly dir: string;
        readonly ca: string;
        readonly otherCa: string;
        readonly clientCert: string;
        readonly clientKey: string;
        readonly clientKeyEncrypted: string;
        /** A private key that does not match clientCert. */
        readonly otherKey: string;
        readonly garbage: string;
        readonly empty: string;
        readonly fakeCert: string;
        readonly fakeKey: string;
        readonly missing: string;
    };
}

/** The uri schemes open() connects with; it refuses any other before connecting. */
const KNOWN_SCHEMES: ReadonlySet<string> = new Set(['mqtt:', 'tcp:', 'mqtts:', 'ssl:', 'tls:', 'ws:', 'wss:']);

/** Ports a generated case must never reach: brokers that may run on the machine. */
const SYSTEM_PORTS: ReadonlySet<number> = new Set([80, 443, 1883, 1884, 4222, 5672, 8080, 8083, 8883, 8884, 9001, 15675]);

// ---------------------------------------------------------------- the kinds of cases

type OpenRule = 'must' | 'may' | 'never';

/** What a generator made: the configuration and what is special about it. */
interface Generated {
    /** For the report and grouping: "username of 70000 bytes". */
    readonly variant: string;
    /** The key at fault (or its last segment): the rejection's message must contain one of these. */
    readonly key?: string | readonly string[];
    /** A narrower open rule than the kind's: 'must' where a 'may' kind's case is sure to connect. */
    readonly open?: OpenRule;
}

interface KindSpec {
    readonly weight: number;
    /** Whether open() must, may or must not resolve. */
    readonly open: OpenRule;
    /** The codes a rejection may carry. */
    readonly codes: readonly string[];
    /** A rejection must be a ConfigException (category Misconfiguration). */
    readonly config: boolean;
    readonly generate: (g: Gen) => Generated;
}

/** One configuration being generated, with its generator. */
class Gen {
    private readonly _entries = new Map<string, unknown>();
    /** The connect_timeout set (ms), when one valid value is: open() must settle within it. */
    public connectTimeout: number | undefined;

    public constructor(public readonly rng: Rng, public readonly env: FuzzEnv, public readonly index: number) {}

    public set(key: string, value: unknown): void {
        this._entries.set(key, value);
    }

    public has(key: string): boolean {
        return this._entries.has(key);
    }

    public tuples(): unknown[] {
        return [...this._entries].flat();
    }

    /** A connect_timeout for a case expected to connect: long enough for a loaded machine. */
    public fastTimeout(): number {
        return this.rng.int(1000, 1500);
    }

    /** A connect_timeout for a case that may wait it out: mostly short, so the suite stays bounded. */
    public slowTimeout(): number {
        return 100 + Math.floor(this.rng.next() ** 3 * 1400);
    }
}

/** The uri query being built (`[name, value]`), or null when the connection is set by keys, not a uri. */
type Query = [string, string][] | null;

/** Sets an option as its own key, in the uri query, or in both (the same value). */
function put(g: Gen, query: Query, key: string, value: unknown, queryName?: string): void {
    if (query !== null && queryName !== undefined) {
        const where = g.rng.pick(['key', 'key', 'query', 'both'] as const);
        if (where !== 'key') query.push([queryName, String(value)]);
        if (where === 'query') return;
    }
    g.set(key, value);
}

const VALID_BOOLEANS: readonly unknown[] = [true, false, 'true', 'false', 'yes', 'no', '1', '0', 't', 'f', 'y', 'n'];
const BAD_BOOLEANS: readonly unknown[] = ['2', 'maybe', 'tru', 'on', 'off', 'enabled', '-1', 'nope', 'yes please', 1.5];

/** Characters no MQTT string may hold (control characters, noncharacters, lone surrogates, NUL). */
const BAD_CHARS: readonly { label: string; text: string }[] = [
    { label: 'U+0001', text: '\u0001' }, { label: 'U+001F', text: '\u001F' }, { label: 'U+007F', text: '\u007F' },
    { label: 'U+0085', text: '\u0085' }, { label: 'U+009F', text: '\u009F' }, { label: 'U+FFFE', text: '\uFFFE' },
    { label: 'U+FFFF', text: '\uFFFF' }, { label: 'U+FDD0', text: '\uFDD0' }, { label: 'U+FDEF', text: '\uFDEF' },
    { label: 'U+1FFFE', text: '\uD83F\uDFFE' }, { label: 'U+10FFFF', text: '\uDBFF\uDFFF' },
    { label: 'lone U+D800', text: '\uD800' }, { label: 'lone U+DC00', text: '\uDC00' }, { label: 'NUL', text: '\u0000' },
];

/** `base` with a bad character at a random place (base is ASCII, so no pair is split). */
function withBadChar(rng: Rng, base: string): { value: string; label: string } {
    const bad = rng.pick(BAD_CHARS);
    const at = rng.int(0, base.length);
    return { value: base.slice(0, at) + bad.text + base.slice(at), label: bad.label };
}

/** True when encodeURIComponent can carry it (no lone surrogate). */
function encodable(value: string): boolean {
    try {
        encodeURIComponent(value);
        return true;
    } catch {
        return false;
    }
}

function validClientId(g: Gen, version: number | undefined): string {
    if (version === 3) return g.rng.pick(['c', 'sensor-1', `fuzz${g.rng.hex(12)}`, 'A'.repeat(23)]); // MQTT 3.1: 1 to 23 characters
    return g.rng.pick(['sensor-1', 'plant/7/line-2', 'ünïcødé-id', 'id with spaces', '📡-probe', 'user@site',
        `fuzz-${g.rng.hex(40)}`, 'x'.repeat(g.rng.int(24, 300)), 'a'.repeat(65535)]);
}

function validUsername(g: Gen): string {
    return g.rng.pick(['user', 'ünïcødé', 'user@site', 'first last', '📡', 'u'.repeat(65535)]);
}

function validPassword(g: Gen): string {
    return g.rng.pick([`Secr3t-${g.rng.hex(8)}`, 'pass:with:colons/and?marks#', 'with\u0001control\u007Fchars\u0000', 'p'.repeat(65535)]);
}

/**
 * Sets a random selection of valid options, never those in `except`; connect_timeout always
 * (g.connectTimeout, which the kind chose) unless excepted.
 */
function validOptions(g: Gen, query: Query, version: 3 | 4 | 5 | undefined, except: readonly string[] = []): void {
    const { rng } = g;
    const skip = new Set(except);
    const maybe = (key: string, p: number, value: () => unknown, queryName?: string): void => {
        if (!skip.has(key) && rng.chance(p)) put(g, query, key, value(), queryName);
    };
    if (!skip.has('options.connect_timeout')) {
        g.connectTimeout ??= g.fastTimeout();
        // Its own key, never the uri query: a case that must open is retried with a longer one (see runCase).
        g.set('options.connect_timeout', g.connectTimeout);
    }
    if (version !== undefined && !skip.has('options.protocol_version')) put(g, query, 'options.protocol_version', version, 'protocol_version');
    maybe('options.retry_connect', 0.4, () => rng.pick(VALID_BOOLEANS), 'retry_connect');
    const reconnect = !skip.has('options.reconnect_timeout') && rng.chance(0.4) ? rng.int(100, 1500) : undefined;
    if (reconnect !== undefined) put(g, query, 'options.reconnect_timeout', reconnect, 'reconnect_timeout');
    if (!skip.has('options.reconnect_timeout')) {
        maybe('options.max_reconnect_timeout', 0.3, () => rng.int(reconnect ?? 1000, 30000), 'max_reconnect_timeout');
    }
    maybe('options.keepalive_timeout', 0.4, () => rng.pick([0, 500, 1000, 5000, 60000, 65535000]), 'keepalive_timeout');
    maybe('options.clean_session', 0.3, () => rng.pick(VALID_BOOLEANS), 'clean_session');
    maybe('options.max_offline_messages', 0.2, () => rng.int(0, 100000), 'max_offline_messages');
    maybe('options.max_qos', 0.2, () => rng.int(0, 2));
}

type Transport = 'tcp' | 'ws' | 'tls';

/** A uri `scheme://[user@]host:port[path][?query]`. */
function uri(scheme: string, host: string, port: number | string, query: Query, extra: { userinfo?: string; path?: string } = {}): string {
    const q = query !== null && query.length > 0
        ? `?${query.map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(value)}`).join('&')}`
        : '';
    return `${scheme}://${extra.userinfo ?? ''}${host}:${port}${extra.path ?? ''}${q}`;
}

/** Sets a connection section (`connection` or `connections.N`) to a broker of the transport: a uri when `query` is given, otherwise keys. */
function brokerConnection(g: Gen, prefix: string, transport: Transport, query: Query, userinfo?: string): void {
    const { rng, env } = g;
    const port = transport === 'tcp' ? env.tcpPort : transport === 'ws' ? env.wsPort : env.tlsPort;
    const schemes = transport === 'tcp' ? ['mqtt', 'tcp'] : transport === 'ws' ? ['ws'] : ['mqtts', 'ssl', 'tls'];
    const scheme = rng.pick(schemes);
    if (query !== null) {
        const path = transport === 'ws' ? rng.pick(['', '/mqtt']) : '';
        g.set(`${prefix}.uri`, uri(scheme, env.host, port, query, { userinfo, path }));
        return;
    }
    if (transport !== 'tcp' || rng.chance(0.5)) g.set(`${prefix}.protocol`, scheme);
    g.set(`${prefix}.host`, env.host);
    g.set(`${prefix}.port`, rng.chance(0.5) ? port : String(port));
    if (transport === 'ws' && rng.chance(0.5)) g.set(`${prefix}.path`, '/mqtt');
}

/** How a TLS connection to the TLS broker trusts it (and presents a client certificate), all valid. */
function validTrust(g: Gen, cred: string, query: Query): void {
    const { rng, env } = g;
    const trust = rng.pick(['ca', 'ca', 'no-check', 'client-cert', 'encrypted-key', 'server-name'] as const);
    if (trust === 'no-check') {
        put(g, query, 'options.ssl_reject_unauthorized', rng.pick([false, 'false', 'no', '0']), 'ssl_reject_unauthorized');
        return;
    }
    g.set(`${cred}.ssl_ca_file`, env.files.ca);
    if (trust === 'client-cert') {
        g.set(`${cred}.${rng.pick(['ssl_crt_file', 'ssl_cert_file'])}`, env.files.clientCert);
        g.set(`${cred}.ssl_key_file`, env.files.clientKey);
    } else if (trust === 'encrypted-key') {
        g.set(`${cred}.ssl_crt_file`, env.files.clientCert);
        g.set(`${cred}.ssl_key_file`, env.files.clientKeyEncrypted);
        g.set(`${cred}.ssl_passphrase`, CLIENT_KEY_PASSPHRASE);
    } else if (trust === 'server-name') {
        put(g, query, 'options.ssl_server_name', 'localhost', 'ssl_server_name');
    }
}

/** A connection to the TCP broker with valid options; the kind adds what it tests (holder.query: the uri query, when a uri). */
function plainBase(g: Gen, version: 3 | 4 | 5 | undefined, except: readonly string[] = [], queryHolder?: { query: Query }): void {
    const query: Query = g.rng.chance(0.6) ? [] : null;
    validOptions(g, query, version, except);
    if (queryHolder) queryHolder.query = query;
    brokerConnection(g, 'connection', 'tcp', query);
}

// ---- valid configurations: open() must resolve

function validCase(g: Gen): Generated {
    const { rng } = g;
    const transport = rng.pick(['tcp', 'tcp', 'tcp', 'ws', 'tls'] as const);
    const version = rng.pick([undefined, 3, 4, 4] as const);
    const query: Query = rng.chance(0.7) ? [] : null;
    const cred = rng.pick(['credential', 'credential', 'credentials.1']);
    validOptions(g, query, version);
    const parts: string[] = [transport, `v${version ?? 'default'}`, query ? 'uri' : 'keys'];
    if (rng.chance(0.4)) {
        const id = validClientId(g, version);
        const inQuery = query !== null && id.length < 2000 && rng.chance(0.4);
        if (inQuery) query.push([rng.pick(['client_id', 'clientId']), id]);
        else g.set('client_id', id);
        parts.push(`client id of ${Buffer.byteLength(id)} bytes`);
    } else if (rng.chance(0.1)) {
        g.set('client_id', ''); // empty: not set, the generated one is used
        parts.push('empty client id');
    }
    let userinfo: string | undefined;
    if (rng.chance(0.4)) {
        const username = validUsername(g);
        const password = rng.chance(0.7) ? validPassword(g) : undefined;
        if (query !== null && rng.chance(0.3) && username.length < 1000 && (password === undefined || password.length < 1000)) {
            userinfo = `${encodeURIComponent(username)}${password !== undefined ? `:${encodeURIComponent(password)}` : ''}@`;
        } else {
            g.set(`${cred}.username`, username);
            if (password !== undefined) g.set(`${cred}.password`, password);
        }
        parts.push('credentials');
    }
    if (rng.chance(0.3)) {
        g.set('options.will_topic', rng.pick([`fuzz/will/${g.index}`, 'ünï/📡/will', 'w']));
        if (rng.chance(0.7)) g.set('options.will_message', rng.pick(['', 'bye', 'bin\u0000ary\u0001', 'm'.repeat(65535)]));
        if (rng.chance(0.5)) g.set('options.will_qos', rng.int(0, 2));
        if (rng.chance(0.5)) g.set('options.will_retain', rng.pick(VALID_BOOLEANS));
        parts.push('will');
    }
    if (transport === 'tls') validTrust(g, cred, query);
    brokerConnection(g, 'connection', transport, query, userinfo);
    return { variant: parts.join(', ') };
}

// ---- MQTT 5 against Aedes, which lacks it: refused with reason code 1

function mqtt5Case(g: Gen): Generated {
    const { rng } = g;
    const holder: { query: Query } = { query: null };
    plainBase(g, 5, [], holder);
    const q = holder.query;
    if (rng.chance(0.5)) put(g, q, 'options.session_expiry', rng.pick([0, 60, 4294967295]), 'session_expiry');
    if (rng.chance(0.5)) put(g, q, 'options.topic_alias_maximum', rng.int(0, 65535), 'topic_alias_maximum');
    const id = rng.pick(['assigned', 'configured', 'generated'] as const);
    if (id === 'assigned') put(g, q, 'options.broker_assigns_client_id', rng.pick(VALID_BOOLEANS), 'broker_assigns_client_id');
    if (id === 'configured') g.set('client_id', validClientId(g, 5));
    if (q !== null) g.set('connection.uri', uri(rng.pick(['mqtt', 'tcp']), g.env.host, g.env.tcpPort, q));
    return { variant: 'protocol_version 5 with valid MQTT 5 options' };
}

// ---- one known bad key

const MQTT5_OPTIONS: readonly { key: string; query: string; value: () => unknown }[] = [
    { key: 'options.session_expiry', query: 'session_expiry', value: () => 60 },
    { key: 'options.topic_alias_maximum', query: 'topic_alias_maximum', value: () => 10 },
    { key: 'options.broker_assigns_client_id', query: 'broker_assigns_client_id', value: () => true },
];

function mqtt5OptionOldVersionCase(g: Gen): Generated {
    const version = g.rng.pick([undefined, 3, 4] as const);
    const option = g.rng.pick(MQTT5_OPTIONS);
    const holder: { query: Query } = { query: null };
    plainBase(g, version, [], holder);
    put(g, holder.query, option.key, option.value(), option.query);
    if (holder.query !== null) g.set('connection.uri', uri('mqtt', g.env.host, g.env.tcpPort, holder.query));
    return { variant: `${option.key} with protocol_version ${version ?? 'default (4)'}`, key: last(option.key) };
}

const BAD_TIMEOUTS: readonly unknown[] = [0, -1, -100, 'abc', '1.5', 1.5, '100ms', 2147483648, '99999999999999999999', 1e21, NaN,
    Infinity, '0x64', '1e3', '+100'];

const NUMBER_OPTIONS: readonly { key: string; query?: string; bad: readonly unknown[]; needs?: (g: Gen) => void }[] = [
    { key: 'options.connect_timeout', query: 'connect_timeout', bad: BAD_TIMEOUTS },
    { key: 'options.reconnect_timeout', query: 'reconnect_timeout', bad: BAD_TIMEOUTS },
    { key: 'options.max_reconnect_timeout', query: 'max_reconnect_timeout', bad: BAD_TIMEOUTS },
    { key: 'options.keepalive_timeout', query: 'keepalive_timeout', bad: [-1, 65535001, 'abc', 1.5, Infinity, 2147483648, '60s'] },
    { key: 'options.max_offline_messages', query: 'max_offline_messages', bad: [-1, 100000001, 'lots', 2.5] },
    { key: 'options.max_qos', bad: [3, -1, 'two', 1.5] },
    { key: 'options.will_qos', bad: [3, -1, 'x', 0.5], needs: (g) => g.set('options.will_topic', 'fuzz/will') },
    { key: 'options.session_expiry', query: 'session_expiry', bad: [-1, 4294967296, 'forever', 1.5], needs: (g) => g.set('options.protocol_version', 5) },
    { key: 'options.topic_alias_maximum', query: 'topic_alias_maximum', bad: [-1, 65536, 'many'], needs: (g) => g.set('options.protocol_version', 5) },
];

function badNumberCase(g: Gen): Generated {
    const { rng } = g;
    const option = rng.pick(NUMBER_OPTIONS);
    const except = [option.key];
    if (option.needs) except.push('options.protocol_version');
    if (option.key === 'options.max_reconnect_timeout' && rng.chance(0.3)) {
        // Shorter than reconnect_timeout.
        except.push('options.reconnect_timeout');
        const holder: { query: Query } = { query: null };
        plainBase(g, undefined, except, holder);
        g.set('options.reconnect_timeout', 1000);
        g.set(option.key, rng.int(1, 999));
        return { variant: `${option.key} below reconnect_timeout`, key: last(option.key) };
    }
    const holder: { query: Query } = { query: null };
    g.connectTimeout = option.key === 'options.connect_timeout' ? undefined : g.fastTimeout();
    plainBase(g, undefined, except, holder);
    option.needs?.(g);
    const value = rng.pick(option.bad);
    if (holder.query !== null && option.query !== undefined && rng.chance(0.4)) {
        holder.query.push([option.query, String(value)]);
        g.set('connection.uri', uri('mqtt', g.env.host, g.env.tcpPort, holder.query));
        return { variant: `${option.key} '${String(value)}' in the uri query`, key: last(option.key) };
    }
    g.set(option.key, value);
    return { variant: `${option.key} ${show(value)}`, key: last(option.key) };
}

const BOOLEAN_OPTIONS: readonly { key: string; query?: string; needs?: (g: Gen) => void }[] = [
    { key: 'options.retry_connect', query: 'retry_connect' },
    { key: 'options.clean_session', query: 'clean_session' },
    { key: 'options.ssl_reject_unauthorized', query: 'ssl_reject_unauthorized' },
    { key: 'options.will_retain', needs: (g) => g.set('options.will_topic', 'fuzz/will') },
    { key: 'options.broker_assigns_client_id', query: 'broker_assigns_client_id', needs: (g) => g.set('options.protocol_version', 5) },
];

function badBooleanCase(g: Gen): Generated {
    const option = g.rng.pick(BOOLEAN_OPTIONS);
    const holder: { query: Query } = { query: null };
    plainBase(g, undefined, [option.key, 'options.protocol_version'], holder);
    option.needs?.(g);
    const value = g.rng.pick(BAD_BOOLEANS);
    if (holder.query !== null && option.query !== undefined && g.rng.chance(0.4)) {
        holder.query.push([option.query, String(value)]);
        g.set('connection.uri', uri('mqtt', g.env.host, g.env.tcpPort, holder.query));
    } else {
        g.set(option.key, value);
    }
    return { variant: `${option.key} ${show(value)}`, key: last(option.key) };
}

function badProtocolVersionCase(g: Gen): Generated {
    const holder: { query: Query } = { query: null };
    plainBase(g, undefined, ['options.protocol_version'], holder);
    const value = g.rng.pick(['2', '6', '0', '-1', 'five', '4.0', '3.1.1', 'v5', 5.5, 'MQTT']);
    if (holder.query !== null && g.rng.chance(0.4)) {
        holder.query.push(['protocol_version', String(value)]);
        g.set('connection.uri', uri('mqtt', g.env.host, g.env.tcpPort, holder.query));
    } else {
        g.set('options.protocol_version', value);
    }
    return { variant: `options.protocol_version ${show(value)}`, key: 'protocol_version' };
}

function badPortCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    const prefix = rng.pick(['connection', 'connection', 'connections.1']);
    if (rng.chance(0.5)) {
        const port = rng.pick<unknown>([0, 65536, -1, 'abc', '1.5', 99999, '80a', '0x50', 1e6, ' ']);
        g.set(`${prefix}.host`, env.host);
        g.set(`${prefix}.port`, port);
        return { variant: `${prefix}.port ${show(port)}`, key: `${prefix}.port` };
    }
    const port = rng.pick(['0', '65536', '-1', 'abc', '99999', '1.5', '00']);
    g.set(`${prefix}.uri`, uri(rng.pick(['mqtt', 'tcp', 'ws', 'mqtts']), env.host, port, null));
    return { variant: `${prefix}.uri with port '${port}'`, key: `${prefix}.uri` };
}

function badUriCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    const p = env.tcpPort;
    const prefix = rng.pick(['connection', 'connection', 'connections.1']);
    const value = rng.pick([
        'not a uri', `mqtt//${env.host}:${p}`, `${env.host}:${p}`, `mqtt:${env.host}:${p}`, 'mqtt://', 'mqtt:///path', `mqtt://:${p}`,
        `mqtt://[::1:${p}`, `mqtt://a b:${p}`, `http://${env.host}:${p}`, `amqp://${env.host}:${p}`, `mqtt+ssl://${env.host}:${p}`,
        'file:///etc/passwd', `mqtt://${env.host}:${env.closedPort}/er:pw@${env.host}:${p}`, `mqtt://user:pa?ss@${env.host}:${p}`, `mqtt://%zz@${env.host}:${p}`,
        `mqtt://${env.host}:${p}?connect_timout=100`, `mqtt://${env.host}:${p}?clientid=x`, `mqtt://${env.host}:${p}?keepalive=10`,
        `mqtt://${env.host}:${p}?username=u`, `mqtt://${env.host}:${p}?client_id=a&clientId=b`, `mqtt://${env.host}:${p}?&=x`,
        '', ' ', '\u0000', `mqtt://${env.host}:${p}/?x`,
    ]);
    g.set(`${prefix}.uri`, value);
    if (value === '' || value === ' ') {
        // Empty: no connection at all (blank: a uri that cannot be parsed).
        return { variant: `${prefix}.uri ${show(value)}`, key: value === '' ? 'connection' : `${prefix}.uri` };
    }
    return { variant: `${prefix}.uri ${show(value)}`, key: `${prefix}.uri` };
}

function badUriQueryValueCase(g: Gen): Generated {
    const { rng, env } = g;
    const bad = rng.pick([
        { name: 'connect_timeout', value: 'abc', key: 'connect_timeout' },
        { name: 'keepalive_timeout', value: '-5', key: 'keepalive_timeout' },
        { name: 'retry_connect', value: 'maybe', key: 'retry_connect' },
        { name: 'clean_session', value: 'perhaps', key: 'clean_session' },
        { name: 'protocol_version', value: '7', key: 'protocol_version' },
        { name: 'session_expiry', value: '10', key: 'session_expiry' },
        { name: 'client_id', value: 'a\u0000b', key: 'client_id' },
        { name: 'clientId', value: 'a\u0001b', key: 'client_id' },
        { name: 'ssl_server_name', value: 'localhost', key: 'ssl_server_name' },
        { name: 'max_offline_messages', value: '1e9', key: 'max_offline_messages' },
    ]);
    const except = bad.key === 'client_id' ? [] : [`options.${bad.key}`];
    validOptions(g, null, undefined, except);
    g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, [[bad.name, bad.value]]));
    return { variant: `uri query ${bad.name}=${show(bad.value)}`, key: bad.key };
}

function badProtocolCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    const prefix = rng.pick(['connection', 'connections.1']);
    const value = rng.pick(['http', 'mqttx', 'udp', 'MQTT 5', 'wss2', 'mqtt ', 'quic', '-']);
    g.set(`${prefix}.protocol`, value);
    g.set(`${prefix}.host`, env.host);
    g.set(`${prefix}.port`, env.tcpPort);
    return { variant: `${prefix}.protocol ${show(value)}`, key: `${prefix}.protocol` };
}

function conflictCase(g: Gen): Generated {
    const { rng, env } = g;
    const which = rng.pick(['port', 'host', 'protocol', 'path', 'query-option', 'query-client-id', 'user', 'query-between',
        'mixed-transports', 'ws-paths', 'assigned-id'] as const);
    const base = uri('mqtt', env.host, env.tcpPort, null);
    switch (which) {
        case 'port':
            validOptions(g, null, undefined);
            g.set('connection.uri', base);
            g.set('connection.port', env.closedPort);
            return { variant: 'connection.port differs from the uri port', key: 'connection.port' };
        case 'host':
            validOptions(g, null, undefined);
            g.set('connection.uri', base);
            g.set('connection.host', '10.255.255.1');
            return { variant: 'connection.host differs from the uri host', key: 'connection.host' };
        case 'protocol':
            validOptions(g, null, undefined);
            g.set('connection.uri', base);
            g.set('connection.protocol', rng.pick(['ws', 'mqtts', 'wss', 'ssl']));
            return { variant: 'connection.protocol differs from the uri scheme', key: 'connection.protocol' };
        case 'path':
            validOptions(g, null, undefined);
            g.set('connection.uri', uri('ws', env.host, env.wsPort, null, { path: '/mqtt' }));
            g.set('connection.path', '/other');
            return { variant: 'connection.path differs from the uri path', key: 'connection.path' };
        case 'query-option': {
            validOptions(g, null, undefined, ['options.keepalive_timeout']);
            g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, [['keepalive_timeout', '1000']]));
            g.set('options.keepalive_timeout', 2000);
            return { variant: 'options.keepalive_timeout differs from the uri query', key: 'keepalive_timeout' };
        }
        case 'query-client-id':
            validOptions(g, null, undefined);
            g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, [[rng.pick(['client_id', 'clientId']), 'one']]));
            g.set('client_id', 'two');
            return { variant: 'client_id differs from the uri query', key: 'client_id' };
        case 'user':
            validOptions(g, null, undefined);
            g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null, { userinfo: 'alice:pw@' }));
            g.set('credential.username', 'bob');
            return { variant: 'credential.username differs from the uri user', key: 'username' };
        case 'query-between':
            validOptions(g, null, undefined, ['options.keepalive_timeout']);
            g.set('connections.1.uri', uri('mqtt', env.host, env.tcpPort, [['keepalive_timeout', '1000']]));
            g.set('connections.2.uri', uri('mqtt', env.host, env.closedPort, [['keepalive_timeout', '5000']]));
            return { variant: 'uri query values differ between failover connections', key: 'connections.2.uri' };
        case 'mixed-transports':
            validOptions(g, null, undefined);
            g.set('connections.1.uri', uri('mqtt', env.host, env.tcpPort, null));
            g.set('connections.2.uri', uri('ws', env.host, env.wsPort, null));
            return { variant: 'failover mixes TCP and WebSocket', key: 'connections.2' };
        case 'ws-paths':
            validOptions(g, null, undefined);
            g.set('connections.1.uri', uri('ws', env.host, env.wsPort, null, { path: '/mqtt' }));
            g.set('connections.2.uri', uri('ws', env.host, env.closedPort, null, { path: '/other' }));
            return { variant: 'failover WebSocket paths differ', key: 'connections.2.path' };
        case 'assigned-id':
            validOptions(g, null, 5);
            g.set('connection.uri', base);
            g.set('options.broker_assigns_client_id', true);
            g.set('client_id', 'mine');
            return { variant: 'broker_assigns_client_id with client_id', key: 'broker_assigns_client_id' };
    }
}

function noConnectionCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    const which = rng.pick(['none', 'port-only', 'protocol-only', 'numbered-port-only'] as const);
    if (which === 'port-only') {
        g.set('connection.port', env.tcpPort);
        return { variant: 'connection.port without a host', key: 'connection.host' };
    }
    if (which === 'protocol-only') {
        g.set('connection.protocol', rng.pick(['mqtt', 'ws', 'mqtts']));
        g.set('connection.port', env.tcpPort);
        return { variant: 'connection.protocol and port without a host', key: 'connection.host' };
    }
    if (which === 'numbered-port-only') {
        g.set('connections.1.port', env.tcpPort);
        return { variant: 'connections.1.port without a host', key: 'connections.1.host' };
    }
    return { variant: 'no connection at all', key: 'connection' };
}

function unresolvableCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    if (rng.chance(0.5)) {
        const prefix = rng.pick(['connection', 'connections.1']);
        g.set(`${prefix}.discovery_key`, 'fuzz-broker');
        return { variant: `${prefix}.discovery_key without a discovery service`, key: 'discovery_key' };
    }
    g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null));
    const prefix = rng.pick(['credential', 'credentials.1']);
    g.set(`${prefix}.store_key`, 'fuzz-credential');
    return { variant: `${prefix}.store_key without a credential store`, key: 'store_key' };
}

// ---- failover and unreachable brokers

type Target = 'broker' | 'closed' | 'silent';

function failoverCase(g: Gen): Generated {
    const { rng, env } = g;
    const ws = rng.chance(0.25);
    const count = rng.int(2, 3);
    const targets: Target[] = [];
    for (let i = 0; i < count; i++) targets.push(rng.pick(ws ? ['broker', 'closed'] as const : ['broker', 'closed', 'silent'] as const));
    g.connectTimeout = g.slowTimeout();
    validOptions(g, null, undefined, ['options.reconnect_timeout', 'options.max_reconnect_timeout']);
    if (rng.chance(0.7)) g.set('options.reconnect_timeout', rng.int(100, 300));
    targets.forEach((target, i) => {
        const port = target === 'closed' ? env.closedPort : target === 'silent' ? env.silentPort : ws ? env.wsPort : env.tcpPort;
        const prefix = `connections.${i + 1}`;
        if (rng.chance(0.6)) {
            g.set(`${prefix}.uri`, uri(ws ? 'ws' : rng.pick(['mqtt', 'tcp']), env.host, port, null));
        } else {
            if (ws) g.set(`${prefix}.protocol`, 'ws');
            g.set(`${prefix}.host`, env.host);
            g.set(`${prefix}.port`, port);
        }
    });
    // The first server is tried first, with its share of connect_timeout: reachable, it must accept.
    const firstIsBroker = targets[0] === 'broker' && g.connectTimeout / count >= 300;
    return { variant: `${ws ? 'ws' : 'tcp'} failover ${targets.join(', ')}`, open: firstIsBroker ? 'must' : 'may' };
}

function failoverInvalidCase(g: Gen): Generated {
    const { rng, env } = g;
    const count = rng.int(2, 3);
    const bad = rng.int(1, count);
    validOptions(g, null, undefined);
    let result: Generated = { variant: '' };
    for (let i = 1; i <= count; i++) {
        const prefix = `connections.${i}`;
        if (i !== bad) {
            g.set(`${prefix}.uri`, uri('mqtt', env.host, rng.pick([env.tcpPort, env.closedPort]), null));
            continue;
        }
        const how = rng.pick(['port', 'protocol', 'host', 'uri'] as const);
        if (how === 'port') {
            g.set(`${prefix}.host`, env.host);
            g.set(`${prefix}.port`, rng.pick([0, 70000, 'x']));
            result = { variant: `failover with a bad ${prefix}.port`, key: `${prefix}.port` };
        } else if (how === 'protocol') {
            g.set(`${prefix}.protocol`, 'gopher');
            g.set(`${prefix}.host`, env.host);
            g.set(`${prefix}.port`, env.tcpPort);
            result = { variant: `failover with a bad ${prefix}.protocol`, key: `${prefix}.protocol` };
        } else if (how === 'host') {
            g.set(`${prefix}.port`, env.tcpPort);
            result = { variant: `failover with no ${prefix}.host`, key: `${prefix}.host` };
        } else {
            g.set(`${prefix}.uri`, rng.pick(['mqtt://', 'nonsense', `mqtt://${env.host}:abc`]));
            result = { variant: `failover with a bad ${prefix}.uri`, key: `${prefix}.uri` };
        }
    }
    return result;
}

function unreachableCase(g: Gen): Generated {
    const { rng, env } = g;
    const which = rng.pick([
        { variant: 'mqtt to a closed port', scheme: 'mqtt', port: env.closedPort },
        { variant: 'mqtt to a silent server', scheme: 'mqtt', port: env.silentPort },
        { variant: 'ws to the TCP broker', scheme: 'ws', port: env.tcpPort },
        { variant: 'ws to a closed port', scheme: 'ws', port: env.closedPort },
        { variant: 'ws to a silent server', scheme: 'ws', port: env.silentPort },
        { variant: 'mqtt to the WebSocket broker', scheme: 'mqtt', port: env.wsPort },
        { variant: 'mqtt to the TLS broker', scheme: 'mqtt', port: env.tlsPort },
        { variant: 'ws to the WebSocket broker on another path', scheme: 'ws', port: env.wsPort, path: '/not-mqtt' },
    ]);
    g.connectTimeout = g.slowTimeout();
    validOptions(g, null, undefined, ['options.reconnect_timeout', 'options.max_reconnect_timeout']);
    if (rng.chance(0.7)) g.set('options.reconnect_timeout', rng.int(100, 300));
    g.set('connection.uri', uri(which.scheme, env.host, which.port, null, { path: which.path }));
    return { variant: which.variant };
}

// ---- strings MQTT cannot carry (client id, credentials, will)

function badClientIdCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, rng.pick([undefined, 3, 4] as const));
    let value: string;
    let variant: string;
    if (rng.chance(0.3)) {
        value = rng.pick(['c'.repeat(70000), 'é'.repeat(32768), 'c'.repeat(65536)]);
        variant = `client_id of ${Buffer.byteLength(value)} bytes`;
    } else {
        const bad = withBadChar(rng, rng.pick(['sensor-1', 'c', 'fuzz-client']));
        value = bad.value;
        variant = `client_id with ${bad.label}`;
    }
    if (encodable(value) && value.length < 1000 && rng.chance(0.3)) {
        g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, [[rng.pick(['client_id', 'clientId']), value]]));
        return { variant: `${variant} in the uri query`, key: 'client_id' };
    }
    g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null));
    g.set('client_id', value);
    return { variant, key: 'client_id' };
}

function badCredentialCase(g: Gen): Generated {
    const { rng, env } = g;
    const version = rng.pick([undefined, 3, 4] as const);
    validOptions(g, null, version);
    const cred = rng.pick(['credential', 'credential', 'credentials.1']);
    const which = rng.pick(['long-user', 'bad-user', 'long-password', 'password-only', 'uri-bad-user', 'uri-password-only'] as const);
    const plain = uri('mqtt', env.host, env.tcpPort, null);
    switch (which) {
        case 'long-user':
            g.set('connection.uri', plain);
            g.set(`${cred}.username`, rng.pick(['u'.repeat(70000), 'ü'.repeat(32768)]));
            return { variant: 'username over 65535 bytes', key: 'username' };
        case 'bad-user': {
            const bad = withBadChar(rng, 'user');
            g.set('connection.uri', plain);
            g.set(`${cred}.username`, bad.value);
            return { variant: `username with ${bad.label}`, key: 'username' };
        }
        case 'long-password':
            g.set('connection.uri', plain);
            g.set(`${cred}.username`, 'user');
            g.set(`${cred}.password`, 'p'.repeat(70000));
            return { variant: 'password over 65535 bytes', key: 'password' };
        case 'password-only':
            g.set('connection.uri', plain);
            g.set(`${cred}.password`, `Secr3t-${rng.hex(8)}`);
            return { variant: `password without username, protocol_version ${version ?? 'default (4)'}`, key: ['username', 'password'] };
        case 'uri-bad-user': {
            const bad = withBadChar(rng, 'user');
            if (!encodable(bad.value)) {
                g.set('connection.uri', plain);
                g.set('credential.username', bad.value);
                return { variant: `username with ${bad.label}`, key: 'username' };
            }
            g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null, { userinfo: `${encodeURIComponent(bad.value)}:pw@` }));
            return { variant: `uri user with ${bad.label}`, key: 'username' };
        }
        case 'uri-password-only':
            g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null, { userinfo: `:Secr3t-${rng.hex(8)}@` }));
            return { variant: `uri password without a user, protocol_version ${version ?? 'default (4)'}`, key: ['username', 'password'] };
    }
}

function badWillCase(g: Gen): Generated {
    const { rng, env } = g;
    validOptions(g, null, undefined);
    g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null));
    const which = rng.pick(['long-message', 'wildcard-topic', 'bad-char-topic', 'long-topic', 'orphan', 'bad-qos'] as const);
    switch (which) {
        case 'long-message':
            g.set('options.will_topic', 'fuzz/will');
            g.set('options.will_message', rng.pick(['m'.repeat(70000), 'ü'.repeat(32768)]));
            return { variant: 'will_message over 65535 bytes', key: 'will_message' };
        case 'wildcard-topic': {
            const topic = rng.pick(['+', '#', 'a/+/b', 'a/#', 'sensors/+']);
            g.set('options.will_topic', topic);
            return { variant: `will_topic with wildcards '${topic}'`, key: 'will_topic' };
        }
        case 'bad-char-topic': {
            const bad = withBadChar(rng, 'fuzz/will');
            g.set('options.will_topic', bad.value);
            if (rng.chance(0.5)) g.set('options.will_message', 'bye');
            return { variant: `will_topic with ${bad.label}`, key: 'will_topic' };
        }
        case 'long-topic':
            g.set('options.will_topic', 't'.repeat(70000));
            return { variant: 'will_topic over 65535 bytes', key: 'will_topic' };
        case 'orphan': {
            const key = rng.pick(['options.will_message', 'options.will_qos', 'options.will_retain']);
            g.set(key, key === 'options.will_message' ? 'bye' : key === 'options.will_qos' ? 1 : true);
            return { variant: `${key} without will_topic`, key: last(key) };
        }
        case 'bad-qos':
            g.set('options.will_topic', 'fuzz/will');
            g.set('options.will_qos', rng.pick([3, -1, 'two']));
            return { variant: 'will_qos out of range', key: 'will_qos' };
    }
}

// ---- TLS

function badTlsFilesCase(g: Gen): Generated {
    const { rng, env } = g;
    const { files } = env;
    const cred = rng.pick(['credential', 'credential', 'credentials.1']);
    validOptions(g, null, undefined);
    const which = rng.pick(['on-plain', 'server-name-on-plain', 'ca', 'crt-only', 'key-only', 'bad-crt', 'bad-key', 'mismatch',
        'encrypted-no-passphrase', 'wrong-passphrase', 'passphrase-plain-key', 'passphrase-only', 'alias-conflict'] as const);
    const badFile = (): string => rng.pick([files.missing, files.garbage, files.empty, files.dir, files.fakeCert, files.fakeKey]);
    const tlsUri = uri(rng.pick(['mqtts', 'ssl', 'tls']), env.host, env.tlsPort, null);
    if (which === 'on-plain') {
        g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null));
        const name = rng.pick(['ssl_ca_file', 'ssl_crt_file', 'ssl_cert_file', 'ssl_key_file', 'ssl_passphrase']);
        g.set(`${cred}.${name}`, name === 'ssl_passphrase' ? 'secret' : name === 'ssl_key_file' ? files.clientKey : files.ca);
        return { variant: `${name} on an mqtt:// connection`, key: name };
    }
    if (which === 'server-name-on-plain') {
        g.set('connection.uri', uri('mqtt', env.host, env.tcpPort, null));
        g.set('options.ssl_server_name', 'localhost');
        return { variant: 'ssl_server_name on an mqtt:// connection', key: 'ssl_server_name' };
    }
    g.set('connection.uri', tlsUri);
    switch (which) {
        case 'ca': {
            const file = rng.pick([files.missing, files.garbage, files.empty, files.dir, files.fakeCert, files.fakeKey, files.clientKey]);
            g.set(`${cred}.ssl_ca_file`, file);
            return { variant: `ssl_ca_file ${fileLabel(env, file)}`, key: 'ssl_ca_file' };
        }
        case 'crt-only':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            return { variant: 'ssl_crt_file without ssl_key_file', key: 'ssl_key_file' };
        case 'key-only':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_key_file`, files.clientKey);
            return { variant: 'ssl_key_file without ssl_crt_file', key: 'ssl_crt_file' };
        case 'bad-crt': {
            const name = rng.pick(['ssl_crt_file', 'ssl_cert_file']);
            const file = badFile();
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.${name}`, file);
            g.set(`${cred}.ssl_key_file`, files.clientKey);
            return { variant: `${name} ${fileLabel(env, file)}`, key: name };
        }
        case 'bad-key': {
            const file = rng.pick([files.missing, files.garbage, files.empty, files.dir, files.fakeKey, files.clientCert]);
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_key_file`, file);
            return { variant: `ssl_key_file ${fileLabel(env, file)}`, key: 'ssl_key_file' };
        }
        case 'mismatch':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_key_file`, files.otherKey);
            return { variant: 'ssl_key_file does not match ssl_crt_file', key: 'ssl_key_file' };
        case 'encrypted-no-passphrase':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_key_file`, files.clientKeyEncrypted);
            return { variant: 'encrypted ssl_key_file without ssl_passphrase', key: 'ssl_passphrase' };
        case 'wrong-passphrase':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_key_file`, files.clientKeyEncrypted);
            g.set(`${cred}.ssl_passphrase`, `wrong-${rng.hex(6)}`);
            return { variant: 'wrong ssl_passphrase', key: 'ssl_passphrase' };
        case 'passphrase-plain-key':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_key_file`, files.clientKey);
            g.set(`${cred}.ssl_passphrase`, 'not-needed');
            return { variant: 'ssl_passphrase with an unencrypted key', key: 'ssl_passphrase' };
        case 'passphrase-only':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_passphrase`, 'lonely');
            return { variant: 'ssl_passphrase without ssl_key_file', key: 'ssl_passphrase' };
        case 'alias-conflict':
            g.set(`${cred}.ssl_ca_file`, files.ca);
            g.set(`${cred}.ssl_crt_file`, files.clientCert);
            g.set(`${cred}.ssl_cert_file`, files.ca);
            g.set(`${cred}.ssl_key_file`, files.clientKey);
            return { variant: 'ssl_cert_file names another file than ssl_crt_file', key: 'ssl_cert_file' };
    }
}

function tlsHandshakeCase(g: Gen): Generated {
    const { rng, env } = g;
    const which = rng.pick(['other-ca', 'no-ca', 'wrong-name', 'tls-to-plain', 'wss-to-ws'] as const);
    g.connectTimeout = which === 'tls-to-plain' || which === 'wss-to-ws' ? g.slowTimeout() : g.fastTimeout();
    validOptions(g, null, undefined, ['options.reconnect_timeout', 'options.max_reconnect_timeout']);
    if (rng.chance(0.7)) g.set('options.reconnect_timeout', rng.int(100, 300));
    switch (which) {
        case 'other-ca':
            g.set('connection.uri', uri('mqtts', env.host, env.tlsPort, null));
            g.set('credential.ssl_ca_file', env.files.otherCa);
            return { variant: 'mqtts trusting another CA' };
        case 'no-ca':
            g.set('connection.uri', uri('mqtts', env.host, env.tlsPort, null));
            return { variant: 'mqtts with Node\'s root CAs only' };
        case 'wrong-name':
            g.set('connection.uri', uri('mqtts', env.host, env.tlsPort, null));
            g.set('credential.ssl_ca_file', env.files.ca);
            g.set('options.ssl_server_name', 'broker.example.com');
            return { variant: 'mqtts with a server name the certificate lacks' };
        case 'tls-to-plain':
            g.set('connection.uri', uri('mqtts', env.host, env.tcpPort, null));
            if (rng.chance(0.5)) g.set('options.ssl_reject_unauthorized', false);
            return { variant: 'mqtts to the plain TCP broker' };
        case 'wss-to-ws':
            g.set('connection.uri', uri('wss', env.host, env.wsPort, null));
            if (rng.chance(0.5)) g.set('options.ssl_reject_unauthorized', false);
            return { variant: 'wss to the plain WebSocket broker' };
    }
}

// ---- everything at once: random keys with valid, invalid and odd values

function randomCase(g: Gen): Generated {
    const { rng, env } = g;
    const { files } = env;
    const weird: readonly unknown[] = [NaN, Infinity, -0, 1.5, 1e21, true, [], [100], { a: 1 }, '', ' ', '\u0000', 'null', 'undefined'];
    const pools: Record<string, readonly unknown[]> = {
        'options.connect_timeout': [100, 250, 500, 1000, 1500, '0100', 0, -1, 'abc', 2147483648],
        'options.reconnect_timeout': [100, 300, 1500, 2147483647, 0, -5, 'soon', 2147483648],
        'options.max_reconnect_timeout': [100, 1500, 30000, 2147483647, 0, 'x', 2147483648],
        'options.keepalive_timeout': [0, 1, 999, 1000, 60000, 65535000, 65535001, -1, 'x'],
        'options.retry_connect': [...VALID_BOOLEANS, ...BAD_BOOLEANS],
        'options.clean_session': [...VALID_BOOLEANS, ...BAD_BOOLEANS],
        'options.protocol_version': [3, 4, 4, 5, '4', ' 5 ', 2, 6, 'x'],
        'options.session_expiry': [0, 60, 4294967295, 4294967296, -1],
        'options.topic_alias_maximum': [0, 1, 65535, 65536, -1],
        'options.broker_assigns_client_id': [true, false, 'maybe'],
        'options.max_offline_messages': [0, 1, 100000000, 100000001, -1],
        'options.max_qos': [0, 1, 2, 3],
        'options.ssl_reject_unauthorized': [true, false, 'perhaps'],
        'options.ssl_server_name': ['localhost', 'broker.example.com', ' '],
        'options.will_topic': ['fuzz/will', 'a/+', '#', 'w\u0001', '\uD800', 't'.repeat(70000)],
        'options.will_message': ['bye', '', 'm'.repeat(70000), 'bin\u0000'],
        'options.will_qos': [0, 1, 2, 3],
        'options.will_retain': [true, false, 'x'],
        'client_id': ['c1', '', 'x'.repeat(70000), 'a\u0001', 'a\u0000', '\uFFFE', '\uD800', '📡'],
        'credential.username': ['user', 'u'.repeat(70000), 'u\u0002', '\uDC00'],
        'credential.password': ['Secr3t-pw', 'p'.repeat(70000), '\u0001'],
        'credential.ssl_ca_file': [files.ca, files.otherCa, files.missing, files.garbage],
        'credential.ssl_crt_file': [files.clientCert, files.fakeCert],
        'credential.ssl_key_file': [files.clientKey, files.otherKey, files.clientKeyEncrypted],
        'credential.ssl_passphrase': [CLIENT_KEY_PASSPHRASE, 'wrong'],
        'connection.path': ['/mqtt', '/', 'mqtt', '/a b', '/%zz', '?x', '/other'],
        // Keys no one reads: misspellings are ignored, like any unknown key of a ConfigParams.
        'options.conect_timeout': [1],
        'option.retry_connect': ['maybe'],
        'connection.user': ['x'],
    };
    const targets: readonly { label: string; set: (prefix: string) => void }[] = [
        { label: 'tcp broker', set: (p) => g.set(`${p}.uri`, uri('mqtt', env.host, env.tcpPort, null)) },
        { label: 'tcp broker by keys', set: (p) => { g.set(`${p}.host`, env.host); g.set(`${p}.port`, env.tcpPort); } },
        { label: 'ws broker', set: (p) => g.set(`${p}.uri`, uri('ws', env.host, env.wsPort, null)) },
        { label: 'ws broker by keys', set: (p) => { g.set(`${p}.protocol`, 'ws'); g.set(`${p}.host`, env.host); g.set(`${p}.port`, env.wsPort); } },
        { label: 'tls broker', set: (p) => g.set(`${p}.uri`, uri('mqtts', env.host, env.tlsPort, null)) },
        { label: 'closed port', set: (p) => g.set(`${p}.uri`, uri('mqtt', env.host, env.closedPort, null)) },
        { label: 'silent server', set: (p) => g.set(`${p}.uri`, uri('mqtt', env.host, env.silentPort, null)) },
        { label: 'localhost', set: (p) => g.set(`${p}.uri`, uri('mqtt', 'localhost', env.tcpPort, null)) },
        { label: 'IPv6 loopback', set: (p) => g.set(`${p}.uri`, uri('mqtt', '[::1]', env.tcpPort, null)) },
        { label: 'garbage uri', set: (p) => g.set(`${p}.uri`, rng.pick(['::', 'mqtt://', 'x://y:1', `mqtt://${env.host}:0`])) },
        { label: 'bad port', set: (p) => { g.set(`${p}.host`, env.host); g.set(`${p}.port`, rng.pick([0, 65536, 'x'])); } },
        { label: 'no host', set: (p) => g.set(`${p}.port`, env.tcpPort) },
    ];
    const labels: string[] = [];
    const sections = rng.pick([['connection'], ['connection'], ['connections.1', 'connections.2'], ['connection', 'connections.1'],
        ['connections.1', 'connections.2', 'connections.3'], []]);
    for (const prefix of sections) {
        const target = rng.pick(targets);
        target.set(prefix);
        labels.push(`${prefix}: ${target.label}`);
    }
    for (const [key, pool] of Object.entries(pools)) {
        if (!rng.chance(0.18)) continue;
        const value = rng.chance(0.1) ? rng.pick(weird) : rng.pick(pool);
        g.set(key, value);
        if (key === 'options.connect_timeout') {
            // open() must settle within it when it is valid (at most 1500 ms here); otherwise at once.
            const ms = /^\s*\d+\s*$/.test(String(value)) ? Number(String(value)) : NaN;
            g.connectTimeout = Number.isSafeInteger(ms) && ms >= 1 && ms <= 1500 ? ms : undefined;
        }
    }
    if (!g.has('options.connect_timeout')) {
        g.connectTimeout = g.slowTimeout();
        g.set('options.connect_timeout', g.connectTimeout);
    }
    if (!g.has('options.reconnect_timeout') && rng.chance(0.5)) g.set('options.reconnect_timeout', rng.int(100, 300));
    return { variant: labels.length > 0 ? labels.join('; ') : 'no connection' };
}

/**
 * The kinds of generated cases, with what open() may do for each: resolve ('must', 'may',
 * 'never'), and the codes a rejection may carry.
 */
const KINDS: Readonly<Record<string, KindSpec>> = {
    'valid': { weight: 14, open: 'must', codes: [], config: false, generate: validCase },
    'mqtt5 on a broker without it': { weight: 3, open: 'may', codes: [E.ConnectRefused, E.ConnectTimeout], config: false, generate: mqtt5Case },
    'MQTT 5 option on an older version': {
        weight: 3, open: 'never', codes: [E.BadOption], config: true, generate: mqtt5OptionOldVersionCase,
    },
    'bad number': { weight: 7, open: 'never', codes: [E.BadOption], config: true, generate: badNumberCase },
    'bad boolean': { weight: 3, open: 'never', codes: [E.BadOption], config: true, generate: badBooleanCase },
    'bad protocol_version': { weight: 3, open: 'never', codes: [E.BadOption], config: true, generate: badProtocolVersionCase },
    'bad port': { weight: 4, open: 'never', codes: [E.BadPort, E.BadUri], config: true, generate: badPortCase },
    'bad uri': {
        weight: 5, open: 'never', codes: [E.BadUri, E.NoHost, E.UnknownProtocol, E.BadPort, E.ConflictingConfig, E.NoConnection],
        config: true, generate: badUriCase,
    },
    'bad uri query value': { weight: 2, open: 'never', codes: [E.BadOption, E.BadTls], config: true, generate: badUriQueryValueCase },
    'bad protocol': { weight: 2, open: 'never', codes: [E.UnknownProtocol], config: true, generate: badProtocolCase },
    'conflict': { weight: 4, open: 'never', codes: [E.ConflictingConfig], config: true, generate: conflictCase },
    'no connection': { weight: 1, open: 'never', codes: [E.NoConnection, E.NoHost], config: true, generate: noConnectionCase },
    'unresolvable': { weight: 1, open: 'never', codes: [E.ResolveFailed], config: true, generate: unresolvableCase },
    'failover': { weight: 5, open: 'may', codes: NET_CODES, config: false, generate: failoverCase },
    'failover with one invalid server': {
        weight: 3, open: 'never', codes: [E.BadPort, E.BadUri, E.NoHost, E.UnknownProtocol], config: true, generate: failoverInvalidCase,
    },
    'unreachable': { weight: 4, open: 'never', codes: [...NET_CODES, E.TlsFailed], config: false, generate: unreachableCase },
    'client_id MQTT cannot carry': { weight: 5, open: 'never', codes: CONFIG_CODES, config: true, generate: badClientIdCase },
    'credential MQTT cannot carry': { weight: 5, open: 'never', codes: CONFIG_CODES, config: true, generate: badCredentialCase },
    'will MQTT cannot carry': { weight: 4, open: 'never', codes: CONFIG_CODES, config: true, generate: badWillCase },
    'bad TLS files': { weight: 5, open: 'never', codes: [E.BadTls, E.ConflictingConfig], config: true, generate: badTlsFilesCase },
    'TLS handshake fails': { weight: 3, open: 'never', codes: [E.TlsFailed, ...NET_CODES], config: false, generate: tlsHandshakeCase },
    'random': { weight: 16, open: 'may', codes: ALL_CODES, config: false, generate: randomCase },
};

// ---------------------------------------------------------------- cases

interface FuzzCase extends Generated {
    readonly index: number;
    readonly kind: string;
    readonly spec: KindSpec;
    readonly tuples: unknown[];
    readonly connectTimeout: number;
}

function pickKind(rng: Rng): string {
    const names = Object.keys(KINDS);
    let total = 0;
    for (const name of names) total += KINDS[name].weight;
    let roll = rng.next() * total;
    for (const name of names) {
        roll -= KINDS[name].weight;
        if (roll < 0) return name;
    }
    return names[names.length - 1];
}

function generate(index: number, env: FuzzEnv): FuzzCase {
    const rng = caseRng(index);
    const kind = pickKind(rng);
    const spec = KINDS[kind];
    const g = new Gen(rng, env, index);
    const generated = spec.generate(g);
    const tuples = g.tuples();
    checkNoSystemPort(index, tuples, env);
    return { ...generated, index, kind, spec, tuples, connectTimeout: g.connectTimeout ?? 1500 };
}

/**
 * A generator bug must not reach a broker of the machine: every connection a case could use names
 * one of the test's ports (a uri or host without a port would get 1883, 8883, 80 or 443).
 */
function checkNoSystemPort(index: number, tuples: unknown[], env: FuzzEnv): void {
    const config = ConfigParams.fromTuples(...tuples);
    const ours = new Set([env.tcpPort, env.wsPort, env.tlsPort, env.silentPort, env.closedPort]);
    const sections = [config.getSection('connection'), ...config.getSection('connections').getSectionNames()
        .map((name) => config.getSection('connections').getSection(name))];
    for (const section of sections) {
        const text = section.getAsNullableString('uri');
        const port = section.getAsNullableString('port');
        let reachable: number | null = null;
        if (text != null && text !== '') {
            let url: URL | null = null;
            try { url = new URL(text); } catch { /* cannot be parsed: open() refuses it */ }
            if (url !== null && url.hostname !== '' && KNOWN_SCHEMES.has(url.protocol)) reachable = url.port === '' ? 1883 : Number(url.port);
        } else if (section.getAsNullableString('host') && section.getAsNullableString('host') !== '') {
            // open() takes digits only ('0x50' and '1e3' are refused).
            reachable = port == null || port === '' ? 1883 : /^\d+$/.test(port.trim()) ? Number(port.trim()) : null;
        }
        if (reachable !== null && Number.isInteger(reachable) && reachable >= 1 && reachable <= 65535
            && (SYSTEM_PORTS.has(reachable) || !ours.has(reachable))) {
            throw new Error(`generator bug: case ${index} could reach port ${reachable}: ${render(tuples, env)}`);
        }
    }
}

// ---------------------------------------------------------------- reporting

function last(key: string): string {
    return key.substring(key.lastIndexOf('.') + 1);
}

/** A string literal with everything outside printable ASCII escaped. */
function quote(text: string): string {
    let out = '';
    for (const ch of text) {
        const code = ch.codePointAt(0) ?? 0;
        if (ch === "'" || ch === '\\') out += `\\${ch}`;
        else if (code >= 0x20 && code < 0x7f) out += ch;
        else if (code > 0xffff) out += ch.split('').map((u) => `\\u${u.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`).join('');
        else out += `\\u${code.toString(16).toUpperCase().padStart(4, '0')}`;
    }
    return `'${out}'`;
}

function show(value: unknown): string {
    if (typeof value === 'string') {
        if (value.length > 60) {
            if (value.split('').every((c) => c === value[0])) return `${quote(value[0])}.repeat(${value.length})`;
            if (value.length % 2 === 0 && /^(.)\1*$/su.test(value)) return `${quote([...value][0])}.repeat(${[...value].length})`;
            return `${quote(value.substring(0, 30))} + … (${value.length} chars)`;
        }
        return quote(value);
    }
    if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
    if (typeof value === 'object' && value !== null) return JSON.stringify(value);
    return String(value);
}

/** The case's configuration as ConfigParams.fromTuples(...), with the test's ports and folders named. */
function render(tuples: unknown[], env: FuzzEnv): string {
    const names: [string, string][] = [
        [String(env.tcpPort), '<aedes-tcp>'], [String(env.wsPort), '<aedes-ws>'], [String(env.tlsPort), '<aedes-tls>'],
        [String(env.silentPort), '<silent>'], [String(env.closedPort), '<closed>'],
    ];
    const name = (text: string): string => {
        let out = text.split(env.files.dir).join('<tmp>');
        for (const [port, label] of names) out = out.split(`:${port}`).join(`:${label}`);
        return out;
    };
    const parts: string[] = [];
    for (let i = 0; i + 1 < tuples.length; i += 2) {
        const value = tuples[i + 1];
        const portName = names.find(([port]) => String(value) === port && (typeof value === 'number' || typeof value === 'string'));
        const shown = portName ? portName[1] : name(show(value));
        parts.push(`${quote(String(tuples[i]))}, ${shown}`);
    }
    return `ConfigParams.fromTuples(${parts.join(', ')})`;
}

function fileLabel(env: FuzzEnv, file: string): string {
    const f = env.files;
    return file === f.missing ? 'missing' : file === f.garbage ? 'of random bytes' : file === f.empty ? 'empty'
        : file === f.dir ? 'a folder' : file === f.fakeCert ? 'a fake PEM certificate' : file === f.fakeKey ? 'a fake PEM key'
            : file === f.clientKey ? 'a private key (no certificate)' : file === f.clientCert ? 'a certificate (no key)' : file;
}

function describeError(err: unknown): string {
    if (err instanceof Error) {
        const code = (err as { code?: unknown }).code;
        const shown = typeof code === 'string' || typeof code === 'number' ? ` ${code}` : code === undefined ? '' : ` ${JSON.stringify(code)}`;
        return `${err.constructor.name}${shown}: ${err.message.substring(0, 300)}`;
    }
    return `${typeof err} ${String(err)}`;
}

// ---------------------------------------------------------------- running a case

const TRACKED = ['TCPSocketWrap', 'TCPConnectWrap', 'TLSWrap', 'Timeout'] as const;

function resources(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
    return counts;
}

/** Null once every tracked resource count is back to the baseline (polled up to `timeoutMs`), otherwise what is left. */
async function leftOver(baseline: Record<string, number>, timeoutMs: number): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    await new Promise((resolve) => setImmediate(resolve));
    for (;;) {
        const now = resources();
        const extra = TRACKED.filter((type) => (now[type] ?? 0) > (baseline[type] ?? 0));
        if (extra.length === 0) return null;
        if (Date.now() >= deadline) return extra.map((type) => `${type} ${baseline[type] ?? 0} -> ${now[type] ?? 0}`).join(', ');
        await delay(20);
    }
}

type Outcome = { state: 'resolved' } | { state: 'rejected'; error: unknown } | { state: 'pending' };

/** How the promise settled within `ms`, with no timer left behind. */
async function within(promise: Promise<unknown>, ms: number): Promise<Outcome> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<Outcome>((resolve) => { timer = setTimeout(() => resolve({ state: 'pending' }), ms); });
    try {
        return await Promise.race([
            promise.then((): Outcome => ({ state: 'resolved' }), (error: unknown): Outcome => ({ state: 'rejected', error })),
            deadline,
        ]);
    } finally {
        clearTimeout(timer);
    }
}

interface Failure {
    readonly kase: FuzzCase;
    readonly problem: string;
}

/** What is wrong with a rejection of this case. */
function checkRejection(kase: FuzzCase, err: unknown): string[] {
    const problems: string[] = [];
    if (!(err instanceof ApplicationException)) return [`open() rejected with ${describeError(err)}, not a Pip.Services ApplicationException`];
    const code = err.code;
    if (typeof code !== 'string' || !code.startsWith('MQTT_') || !ALL_CODES.includes(code)) {
        problems.push(`open() rejected with code ${String(code)}, not an MqttErrorCode (${describeError(err)})`);
    } else if (kase.spec.config && !(err instanceof ConfigException && err.category === 'Misconfiguration')) {
        problems.push(`open() rejected with ${describeError(err)}; expected a ConfigException`);
    } else if (!kase.spec.codes.includes(code)) {
        const expected = kase.spec.codes === CONFIG_CODES ? 'a ConfigException code' : `one of ${kase.spec.codes.join(', ')}`;
        problems.push(`open() rejected with ${code}, not ${expected} (${describeError(err)})`);
    }
    if (kase.key !== undefined) {
        const keys = typeof kase.key === 'string' ? [kase.key] : kase.key;
        if (!keys.some((key) => err.message.includes(key))) {
            problems.push(`the message does not name ${keys.map((k) => `'${k}'`).join(' or ')}: ${describeError(err)}`);
        }
    }
    // Secrets never appear in errors (README, Credentials and secrets).
    for (let i = 0; i + 1 < kase.tuples.length; i += 2) {
        const key = String(kase.tuples[i]);
        const value = kase.tuples[i + 1];
        if (/(password|passphrase)$/.test(key) && typeof value === 'string' && value.length >= 6 && err.message.includes(value)) {
            problems.push(`the message shows the value of ${key}`);
        }
    }
    return problems;
}

/** The tuples with options.connect_timeout set to `ms`. */
function withConnectTimeout(tuples: unknown[], ms: number): unknown[] {
    const copy = [...tuples];
    const at = copy.findIndex((value, i) => i % 2 === 0 && value === 'options.connect_timeout');
    if (at < 0) copy.push('options.connect_timeout', ms);
    else copy[at + 1] = ms;
    return copy;
}

/**
 * Opens and closes the case's configuration once. A case that must open but timed out is tried
 * once more with a connect_timeout of 10 s: a loaded machine may take more than the case's 1 to
 * 1.5 s for a CONNACK, and that is not what this test checks.
 */
async function runCase(kase: FuzzCase, newConnection: () => MqttConnection): Promise<{ outcome: Outcome; problems: string[]; slow: boolean }> {
    const first = await runOnce(kase, kase.tuples, kase.connectTimeout, newConnection());
    const open = kase.open ?? kase.spec.open;
    const timedOut = first.outcome.state === 'rejected' && (first.outcome.error as { code?: unknown }).code === E.ConnectTimeout;
    if (open !== 'must' || !timedOut || first.problems.length !== 1) return { ...first, slow: false };
    const again = await runOnce(kase, withConnectTimeout(kase.tuples, 10000), 10000, newConnection());
    return { outcome: again.outcome, problems: again.problems.map((p) => `${p} (after a first attempt timed out too)`), slow: true };
}

async function runOnce(kase: FuzzCase, tuples: unknown[], connectTimeout: number, connection: MqttConnection): Promise<{ outcome: Outcome; problems: string[] }> {
    const problems: string[] = [];
    const baseline = resources();
    connection.configure(ConfigParams.fromTuples(...tuples));
    const bound = connectTimeout + 5000;
    const opening = connection.open(null);
    const outcome = await within(opening, bound);
    const open = kase.open ?? kase.spec.open;
    if (outcome.state === 'pending') {
        problems.push(`open() did not settle within ${bound} ms (connect_timeout ${connectTimeout} ms + 5 s)`);
    } else if (outcome.state === 'resolved') {
        if (open === 'never') {
            const expected = kase.spec.codes === CONFIG_CODES ? 'a ConfigException' : kase.spec.codes.join(', ');
            problems.push(`open() resolved; expected a rejection with ${expected}${kase.key !== undefined ? ` naming ${show(kase.key)}` : ''}`);
        }
        if (!connection.isOpen()) problems.push('isOpen() is false after open() resolved');
        if (connection.getConnection() === null) problems.push('getConnection() is null after open() resolved');
    } else if (open === 'must') {
        problems.push(`open() rejected: ${describeError(outcome.error)}; expected it to open`);
    } else {
        problems.push(...checkRejection(kase, outcome.error));
    }
    const closing = await within(connection.close(null), 10000);
    if (closing.state === 'pending') problems.push('close() did not settle within 10 s');
    else if (closing.state === 'rejected') problems.push(`close() rejected: ${describeError(closing.error)}`);
    if (outcome.state === 'pending') {
        // close() aborts a pending open(): it must settle now.
        const late = await within(opening, 5000);
        if (late.state === 'pending') problems.push('open() still had not settled 5 s after close()');
    }
    if (connection.isOpen()) problems.push('isOpen() is true after close()');
    if (connection.getConnection() !== null) problems.push('getConnection() is not null after close()');
    const left = await leftOver(baseline, 2000);
    if (left !== null) problems.push(`resources left 2 s after close(): ${left}`);
    return { outcome, problems };
}

/**
 * A server that accepts and never answers, like the fixture's silent(), but reading what comes, so
 * that its side of a connection closes when the client's does: the handle counts then show only
 * the client's sockets.
 */
async function readingSilentServer(): Promise<{ port: number; stop(): Promise<void> }> {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.once('close', () => sockets.delete(socket));
        socket.resume();
    });
    await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
    });
    return {
        port: (server.address() as AddressInfo).port,
        stop: () => new Promise<void>((resolve) => {
            server.close(() => resolve());
            for (const socket of sockets) socket.destroy();
        }),
    };
}

/** What a failed check is about, without the case's details: for grouping. */
function cause(kase: FuzzCase, problem: string): string {
    return `${kase.kind}: ${problem.replace(/\(\)/g, '').split(/[:(]/)[0].replace(/\d+/g, 'N').trim()}`;
}

// ---------------------------------------------------------------- the test

describe('MqttConnection configuration fuzzing', { timeout: 180000 }, () => {
    it('opens every generated configuration it can use, rejects every other with a typed error naming the key, and leaves nothing running after close()', async (t) => {
        const f = fixture(t);
        const started = Date.now();
        t.diagnostic(`seed 0x${SEED.toString(16)} (FUZZ_SEED), ${CASES} cases (FUZZ_CASES)${ONLY ? `, only ${[...ONLY].join(',')} (FUZZ_ONLY)` : ''}`);

        const certs = testCertificates();
        const dir = mkdtempSync(join(tmpdir(), 'mqtt-config-fuzz-'));
        f.defer(() => rmSync(dir, { recursive: true, force: true }));
        const garbageRng = new Rng(SEED);
        const garbage = Buffer.alloc(2048);
        for (let i = 0; i < garbage.length; i++) garbage[i] = garbageRng.int(0, 255);
        const write = (name: string, content: string | Buffer): string => {
            const path = join(dir, name);
            writeFileSync(path, content);
            return path;
        };
        const files: FuzzEnv['files'] = {
            dir,
            ca: certs.ca.cert.path,
            otherCa: certs.otherCa.cert.path,
            clientCert: certs.client.cert.path,
            clientKey: certs.client.key.path,
            clientKeyEncrypted: certs.client.keyEncrypted.path,
            otherKey: certs.otherClient.key.path,
            garbage: write('garbage.pem', garbage),
            empty: write('empty.pem', ''),
            fakeCert: write('fake-cert.pem', '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n'),
            fakeKey: write('fake-key.pem', '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n'),
            missing: join(dir, 'missing.pem'),
        };
        const tcp = await f.aedes();
        const ws = await f.aedes({ websocket: true });
        const tls = await f.aedes({ tls: { key: certs.server.key.pem, cert: certs.server.cert.pem } });
        const silent = await readingSilentServer();
        f.defer(() => silent.stop());
        const env: FuzzEnv = {
            host: '127.0.0.1',
            tcpPort: tcp.port,
            wsPort: ws.port,
            tlsPort: tls.port,
            silentPort: silent.port,
            closedPort: await refusedPort(),
            files,
        };

        // Anything thrown or rejected out of band, recorded with the case running then. The test
        // runner's own listeners are set aside meanwhile: they would end the test at the first one,
        // before the summary and without naming the configuration. They are back after the test.
        const outOfBand: string[] = [];
        let current = -1;
        const onUncaught = (err: unknown): void => { outOfBand.push(`uncaught exception during case ${current}: ${describeError(err)}`); };
        const onUnhandled = (reason: unknown): void => { outOfBand.push(`unhandled rejection during case ${current}: ${describeError(reason)}`); };
        const runnerListeners = {
            uncaughtException: process.listeners('uncaughtException'),
            unhandledRejection: process.listeners('unhandledRejection'),
        };
        process.removeAllListeners('uncaughtException').on('uncaughtException', onUncaught);
        process.removeAllListeners('unhandledRejection').on('unhandledRejection', onUnhandled);
        t.after(() => {
            process.off('uncaughtException', onUncaught);
            process.off('unhandledRejection', onUnhandled);
            for (const listener of runnerListeners.uncaughtException) process.on('uncaughtException', listener);
            for (const listener of runnerListeners.unhandledRejection) process.on('unhandledRejection', listener);
        });

        const failures: Failure[] = [];
        const byCode = new Map<string, number>();
        const byKind = new Map<string, number>();
        let opened = 0;
        let rejected = 0;
        let ran = 0;
        let slow = 0;
        // All generated first: a generator bug stops the run before any case.
        const cases: FuzzCase[] = [];
        for (let index = 0; index < CASES; index++) if (!ONLY || ONLY.has(index)) cases.push(generate(index, env));
        for (const kase of cases) {
            current = kase.index;
            ran++;
            byKind.set(kase.kind, (byKind.get(kase.kind) ?? 0) + 1);
            const { outcome, problems, slow: wasSlow } = await runCase(kase, () => f.closing(new MqttConnection()));
            if (wasSlow) slow++;
            if (outcome.state === 'resolved') opened++;
            if (outcome.state === 'rejected') {
                rejected++;
                const code = (outcome.error as { code?: unknown }).code;
                const label = typeof code === 'string' ? code : `(${describeError(outcome.error).substring(0, 40)})`;
                byCode.set(label, (byCode.get(label) ?? 0) + 1);
            }
            for (const problem of problems) failures.push({ kase, problem });
        }
        // Out-of-band errors may come a little after the case that caused them.
        await delay(500);
        current = -1;

        const seconds = ((Date.now() - started) / 1000).toFixed(1);
        t.diagnostic(`${ran} cases in ${seconds} s: ${opened} opened, ${rejected} rejected, ${ran - opened - rejected} did not settle; ` +
            `${slow} that must open timed out once and were tried again`);
        t.diagnostic(`rejected by code: ${[...byCode].sort((a, b) => b[1] - a[1]).map(([code, n]) => `${code} ${n}`).join(', ')}`);
        t.diagnostic(`cases by kind: ${[...byKind].sort((a, b) => b[1] - a[1]).map(([kind, n]) => `${kind} ${n}`).join(', ')}`);
        t.diagnostic(`${failures.length} failed checks in ${new Set(failures.map((x) => x.kase.index)).size} cases, ${outOfBand.length} out-of-band errors`);

        const causes = new Map<string, number[]>();
        for (const failure of failures) {
            const key = cause(failure.kase, failure.problem);
            causes.set(key, [...(causes.get(key) ?? []), failure.kase.index]);
        }
        for (const [key, indexes] of causes) {
            t.diagnostic(`FAILED ${key}: ${indexes.length} cases (${indexes.slice(0, 10).join(', ')}${indexes.length > 10 ? ', ...' : ''})`);
        }
        const report = [...outOfBand, ...failures.slice(0, 40).map(({ kase, problem }) =>
            `case ${kase.index} [${kase.kind}: ${kase.variant}]: ${problem}\n    ${render(kase.tuples, env)}`)];
        if (failures.length > 40) report.push(`... and ${failures.length - 40} more`);
        if (failures.length > 0) {
            t.diagnostic(`reproduce one: FUZZ_SEED=0x${SEED.toString(16)} FUZZ_ONLY=${failures[0].kase.index} node --test --test-force-exit ` +
                'dist/test/connect/MqttConnection.configFuzz.test.js');
        }
        assert.ok(outOfBand.length === 0 && failures.length === 0,
            `every generated configuration opens or fails as it should, nothing is left running after close(), and nothing ` +
            `is thrown or rejected out of band:\n${report.join('\n')}`);
    });
});

// Bad calls on an open connection: each is refused with a BadRequestException carrying its
// MqttErrorCode before anything reaches the broker, and the connection goes on serving the next
// call (no drop, no reconnect, nothing left pending). The calls come from tables, made in batches
// (at most BATCH at once, each bounded to BOUND_MS so a call that jams fails fast); each batch is
// followed by a QoS 1 publish to a subscribed topic that must arrive. A batch that disturbed the
// connection gets it replaced, so that the next batch is judged on its own.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { BadRequestException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode, type MqttErrorCodeValue } from '../../src';
import { type TestBroker, uniqueTopic } from '../helpers/brokers';
import { RecordingListener } from '../helpers/components';
import { EACH_BROKER, type Fixture, suiteFixture } from '../helpers/fixture';

/** Every awaited call gets this long to settle, so that a call that jams fails fast instead of hanging the file. */
const BOUND_MS = 3000;
/** Calls made at once between two checks that the connection still works. */
const BATCH = 40;
/** The fewest bad calls each broker must see. */
const MIN_CALLS = 150;

// ---------------------------------------------------------------------------------------------
// Printing values: strings escaped (every character outside printable ASCII as \uXXXX), long
// strings cut short, Buffers by size.

/** A string in double quotes, every code unit outside printable ASCII (and " and \\) as \\uXXXX; long ones cut short. */
function escapeString(value: string): string {
    const long = value.length > 40;
    const shown = long ? value.substring(0, 24) : value;
    let out = '"';
    for (let i = 0; i < shown.length; i++) {
        const code = shown.charCodeAt(i);
        out += code >= 0x20 && code <= 0x7E && code !== 0x22 && code !== 0x5C
            ? shown[i] : `\\u${code.toString(16).toUpperCase().padStart(4, '0')}`;
    }
    return long ? `${out}..." (${value.length} code units, ${Buffer.byteLength(value, 'utf8')} bytes of UTF-8)` : `${out}"`;
}

function show(value: unknown): string {
    if (typeof value === 'string') return escapeString(value);
    if (Buffer.isBuffer(value)) return `Buffer(${value.length} bytes)`;
    if (typeof value === 'bigint') return `${value}n`;
    if (typeof value === 'function') return 'a function';
    if (typeof value !== 'object' || value === null) return String(value);
    if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
    const entries = Object.entries(value as Record<string, unknown>).map(([k, v]) => `${escapeString(k)}: ${show(v)}`);
    return entries.length === 0 ? '{}' : `{ ${entries.join(', ')} }`;
}

function describeError(err: unknown): string {
    if (err instanceof Error) {
        const code = (err as { code?: unknown }).code;
        return `${err.constructor.name}${code !== undefined ? ` ${typeof code === 'string' ? code : show(code)}` : ''}: ${err.message}`;
    }
    return `a non-Error ${show(err)}`;
}

// ---------------------------------------------------------------------------------------------
// Bounded calls.

type Outcome =
    | { kind: 'resolved' }
    | { kind: 'rejected'; error: unknown }
    | { kind: 'pending' }
    | { kind: 'threw'; error: unknown };

/** Runs `call` and waits at most `ms` for what it returns to settle. */
async function bounded(call: () => unknown, ms = BOUND_MS): Promise<Outcome> {
    let returned: unknown;
    try {
        returned = call();
    } catch (error) {
        return { kind: 'threw', error };
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Outcome>((resolve) => { timer = setTimeout(() => resolve({ kind: 'pending' }), ms); });
    try {
        return await Promise.race([
            Promise.resolve(returned).then((): Outcome => ({ kind: 'resolved' }), (error: unknown): Outcome => ({ kind: 'rejected', error })),
            timeout,
        ]);
    } finally {
        clearTimeout(timer);
    }
}

// ---------------------------------------------------------------------------------------------
// The calls. The connection's methods are typed; the bad calls pass what the types forbid.

interface LooseConnection {
    publish(...args: unknown[]): Promise<void>;
    subscribe(...args: unknown[]): Promise<void>;
    unsubscribe(...args: unknown[]): Promise<void>;
    open(...args: unknown[]): Promise<void>;
}

/** What a call must do: reject with a BadRequestException with one of `codes`; with `mayResolve`, resolving (ignoring it) is right too. */
interface BadCall {
    readonly what: string;
    readonly codes: readonly MqttErrorCodeValue[];
    readonly mayResolve?: boolean;
    /** It must resolve (a call that is harmless, not refused). */
    readonly mustResolve?: boolean;
    run(connection: LooseConnection, probeTopic: string): unknown;
}

function publishCall(topic: unknown, data: unknown, options: unknown, code: MqttErrorCodeValue): BadCall {
    return {
        what: `publish(${show(topic)}, ${show(data)}, ${show(options)})`,
        codes: [code],
        run: (c) => c.publish(topic, data, options),
    };
}

function subscribeCall(filter: unknown, options: unknown, listener: unknown, code: MqttErrorCodeValue): BadCall {
    return {
        what: `subscribe(${show(filter)}, ${show(options)}, ${listener instanceof RecordingListener ? 'a listener' : show(listener)})`,
        codes: [code],
        // A fresh listener for each call: a listener that the call wrongly subscribes is not shared.
        run: (c) => c.subscribe(filter, options, listener instanceof RecordingListener ? new RecordingListener() : listener),
    };
}

/** Each character once, in turn alone, at the end of a level, and inside one. */
function charTopics(chars: readonly string[]): string[] {
    return chars.map((c, i) => [c, `badcalls/${c}`, `badcalls/a${c}b/c`][i % 3]);
}

const fromCodePoints = (from: number, to: number): string[] =>
    Array.from({ length: to - from + 1 }, (_, i) => String.fromCodePoint(from + i));

/** U+0001–U+001F and U+007F–U+009F: the control characters. */
const CONTROL_C0 = fromCodePoints(0x01, 0x1F);
const CONTROL_C1 = fromCodePoints(0x7F, 0x9F);
/** Noncharacters: a sample of U+FDD0–U+FDEF, U+FFFE, U+FFFF, and U+nFFFE/U+nFFFF of other planes. */
const NONCHARACTERS = [0xFDD0, 0xFDD7, 0xFDE3, 0xFDEF, 0xFFFE, 0xFFFF, 0x1FFFE, 0x1FFFF, 0x2FFFE, 0x10FFFE, 0x10FFFF]
    .map((p) => String.fromCodePoint(p));
/** Lone surrogates: no UTF-8 form (Node would send U+FFFD). */
const LONE_SURROGATES = ['\uD800', '\uDC00', 'a\uD800b', 'a/\uDBFF', '\uDFFFa', '\uDC00\uD800'];
/** Topics and filters of more than 65535 bytes of UTF-8. */
const TOO_LONG = ['a'.repeat(65536), 'é'.repeat(32768), `x/${'€'.repeat(21845)}`];
const NON_STRINGS: unknown[] = [null, undefined, 42, {}, Buffer.from('badcalls/buffer'), true, ['badcalls/array']];

/** Topic names that publish() must refuse with MQTT_INVALID_TOPIC, by group. */
const BAD_TOPICS: Record<string, unknown[]> = {
    'non-strings, empty, NUL, wildcards, too long': [
        ...NON_STRINGS, '', '\u0000', 'a\u0000b', 'a/\u0000',
        '+', '#', 'a/+/b', 'a/#', 'a+', '#a', 'a/b#', '+/+', ...TOO_LONG,
    ],
    'control characters U+0001-U+001F': charTopics(CONTROL_C0),
    'control characters U+007F-U+009F': charTopics(CONTROL_C1),
    'noncharacters and lone surrogates': [...charTopics(NONCHARACTERS), ...LONE_SURROGATES, `badcalls/${LONE_SURROGATES[2]}`],
};

/** Topic filters that subscribe() must refuse with MQTT_INVALID_FILTER, by group. */
const BAD_FILTERS: Record<string, unknown[]> = {
    'non-strings, empty, NUL, too long': [...NON_STRINGS, '', '\u0000', 'a\u0000b', 'a/+/\u0000', ...TOO_LONG],
    'wildcards in the wrong place': ['#/a', 'a/#/b', 'a+', '+a', 'a/b+', 'a/+b/c', '##', '++', 'a#', '#a', 'a/#/#', '+/#/+'],
    'bad shared subscriptions': [
        '$share/', '$share/g', '$share/g/', '$share/g+/a', '$share/g#/a', '$share/+/a', '$share/#/a', '$share//a',
        '$share/g/#/a', '$share/g/a+', '$share/g\u0001/a', '$share/g/\u0001', '$share/\uD800/a', '$share/g/a\uFFFF',
    ],
    'control characters': [...CONTROL_C0, ...CONTROL_C1].map((c, i) => (i % 3 === 0 ? c : i % 3 === 1 ? `badcalls/${c}/+` : `badcalls/x${c}/#`)),
    'noncharacters and lone surrogates': [
        ...NONCHARACTERS.map((c, i) => (i % 2 === 0 ? c : `badcalls/+/${c}`)), ...LONE_SURROGATES, 'badcalls/+/\uD800',
    ],
};

const BAD_QOS: unknown[] = [-1, 3, 1.5, '1', '0', NaN, Infinity, true, [1], {}, 1n];
const BAD_PAYLOADS: unknown[] = [null, undefined, 42, 0, {}, [], [1, 2, 3], true, Symbol('payload')];
const BAD_LISTENERS: unknown[] = [null, undefined, {}, { onMessage: 1 }, { onMessage: 'onMessage' }, { onmessage: () => undefined }, 42, 'listener', [], () => undefined];

/** One batch of calls: a test of its own, followed by the check that the connection still serves. */
interface Batch {
    readonly name: string;
    readonly calls: readonly BadCall[];
}

/** The calls of one table in batches of at most BATCH, of even sizes. */
function batches(name: string, calls: readonly BadCall[]): Batch[] {
    const parts = Math.ceil(calls.length / BATCH);
    const size = Math.ceil(calls.length / parts);
    return Array.from({ length: parts }, (_, i) => ({
        name: parts === 1 ? name : `${name} (${i + 1} of ${parts})`,
        calls: calls.slice(i * size, (i + 1) * size),
    }));
}

const T = 'badcalls/ok';

/** The batches for a connection of MQTT 3.1.1 (the default). */
function v4Batches(): Batch[] {
    const out: Batch[] = [];
    for (const qos of [0, 1, 2]) {
        for (const [group, topics] of Object.entries(BAD_TOPICS)) {
            out.push(...batches(`publish refuses topics at QoS ${qos}: ${group}`,
                topics.map((topic) => publishCall(topic, 'x', { qos }, MqttErrorCode.InvalidTopic))));
        }
    }
    for (const [group, filters] of Object.entries(BAD_FILTERS)) {
        out.push(...batches(`subscribe refuses filters: ${group}`,
            filters.map((filter) => subscribeCall(filter, { qos: 1 }, new RecordingListener(), MqttErrorCode.InvalidFilter))));
    }
    out.push(...batches('subscribe refuses listeners without an onMessage function',
        BAD_LISTENERS.map((listener, i) => subscribeCall(`${T}/listener/${i}`, { qos: 1 }, listener, MqttErrorCode.InvalidListener))));
    out.push(...batches('publish refuses payloads that are not a Buffer or a string', [0, 1].flatMap((qos) =>
        BAD_PAYLOADS.map((data) => publishCall(`${T}/payload`, data, { qos }, MqttErrorCode.InvalidPayload)))));
    out.push(...batches('publish and subscribe refuse a QoS other than 0, 1 or 2', [
        ...BAD_QOS.map((qos) => publishCall(`${T}/qos`, 'x', { qos }, MqttErrorCode.InvalidQos)),
        ...BAD_QOS.map((qos, i) => subscribeCall(`${T}/qos/${i}`, { qos }, new RecordingListener(), MqttErrorCode.InvalidQos)),
    ]));
    const badPublishOptions: unknown[] = [
        'x', 5, true, [], () => undefined, { retain: 'yes' }, { retain: 1 }, { dup: 1 }, { dup: 'true' },
        { qos: 1, retain: 'false' }, { qos: 1, properties: 'x' }, { qos: 1, properties: 5 },
        // MQTT 5 properties on an MQTT 3.1.1 connection: it would drop them in silence.
        { qos: 1, properties: { contentType: 'text/plain' } }, { qos: 1, properties: { userProperties: { a: 'b' } } },
        { qos: 1, properties: { messageExpiryInterval: 60 } }, { qos: 1, properties: { foo: 'bar' } },
    ];
    const badSubscribeOptions: unknown[] = [
        'x', 5, true, [], { nl: 'yes' }, { rap: 1 }, { rh: 3 }, { rh: '1' },
        // MQTT 5 subscribe flags and properties on an MQTT 3.1.1 connection.
        { qos: 1, nl: true }, { qos: 1, rap: true }, { qos: 1, rh: 1 }, { qos: 1, properties: { subscriptionIdentifier: 1 } },
        { qos: 1, properties: 'x' },
    ];
    out.push(...batches('publish and subscribe refuse bad options', [
        ...badPublishOptions.map((options) => publishCall(`${T}/options`, 'x', options, MqttErrorCode.InvalidOptions)),
        ...badSubscribeOptions.map((options, i) => subscribeCall(`${T}/options/${i}`, options, new RecordingListener(), MqttErrorCode.InvalidOptions)),
    ]));
    // publish() and subscribe() take no correlation id; a Pip.Services-style call with one in
    // front shifts every argument. open() takes one: on an open connection it does nothing.
    const listener = new RecordingListener();
    out.push(...batches('calls with a correlation id in front, and open() with one that is not a string', [
        ...[null, 42, {}, Buffer.from('c')].map((cid) => ({
            what: `publish(${show(cid)}, "${T}/cid", "x", { qos: 1 })`, codes: [MqttErrorCode.InvalidTopic],
            run: (c: LooseConnection) => c.publish(cid, `${T}/cid`, 'x', { qos: 1 }),
        })),
        {
            what: `publish("corr-1", "${T}/cid", "x", { qos: 1 })`, codes: [MqttErrorCode.InvalidOptions],
            run: (c: LooseConnection) => c.publish('corr-1', `${T}/cid`, 'x', { qos: 1 }),
        },
        ...[null, 42, {}].map((cid) => ({
            what: `subscribe(${show(cid)}, "${T}/cid", { qos: 1 }, a listener)`, codes: [MqttErrorCode.InvalidFilter],
            run: (c: LooseConnection) => c.subscribe(cid, `${T}/cid`, { qos: 1 }, listener),
        })),
        {
            what: `subscribe("corr-1", "${T}/cid", { qos: 1 }, a listener)`, codes: [MqttErrorCode.InvalidOptions],
            run: (c: LooseConnection) => c.subscribe('corr-1', `${T}/cid`, { qos: 1 }, listener),
        },
        {
            what: `subscribe("corr-1", "${T}/cid", a listener)`, codes: [MqttErrorCode.InvalidOptions],
            run: (c: LooseConnection) => c.subscribe('corr-1', `${T}/cid`, listener),
        },
        ...[null, 42].map((cid) => ({
            what: `unsubscribe(${show(cid)}, <the probe topic>, a listener)`, codes: [MqttErrorCode.InvalidFilter], mayResolve: true,
            run: (c: LooseConnection, probe: string) => c.unsubscribe(cid, probe, listener),
        })),
        ...[42, {}, undefined, ['a']].map((cid) => ({
            what: `open(${show(cid)}) while open`, codes: [], mustResolve: true,
            run: (c: LooseConnection) => c.open(cid),
        })),
    ]));
    // Unsubscribing a filter nobody subscribed is ignored (an unknown pair); refusing a malformed
    // filter is right too. Neither may reach the broker, nor drop the probe's subscription.
    const badUnsubscribeFilters: unknown[] = [
        ...NON_STRINGS, '', '\u0000', 'a\u0000b', '#/a', 'a+', '$share/', '$share//a', '$share/g',
        '\u0001', 'badcalls/\u001F/+', '\u007F', 'badcalls/\u0085', '\uFFFE', '\uD800', 'badcalls/\uDC00/#', TOO_LONG[0],
    ];
    out.push(...batches('unsubscribe ignores or refuses bad filters and listeners', [
        ...badUnsubscribeFilters.map((filter): BadCall => ({
            what: `unsubscribe(${show(filter)}, a listener)`, codes: [MqttErrorCode.InvalidFilter], mayResolve: true,
            run: (c) => c.unsubscribe(filter, new RecordingListener()),
        })),
        ...[null, undefined, {}, { onMessage: 1 }].map((bad): BadCall => ({
            what: `unsubscribe(<the probe topic>, ${show(bad)})`, codes: [MqttErrorCode.InvalidListener], mayResolve: true,
            run: (c, probe) => c.unsubscribe(probe, bad),
        })),
    ]));
    return out;
}

/** The batches for an MQTT 5 connection: bad property values (Mosquitto only: Aedes has no MQTT 5). */
function v5Batches(): Batch[] {
    const big = 'x'.repeat(70000);
    const publishProperties: unknown[] = [
        { messageExpiryInterval: -1 }, { messageExpiryInterval: 1.5 }, { messageExpiryInterval: 2 ** 32 }, { messageExpiryInterval: '60' },
        { messageExpiryInterval: null },
        { contentType: 'text/\u0001plain' }, { contentType: 'text\u0000' }, { contentType: 'text\u001F' }, { contentType: 'text\u007F' },
        { contentType: 'text\u009F' }, { contentType: 'text\uD800' }, { contentType: 'text\uFFFE' }, { contentType: 'text\uFDD0' },
        { contentType: big }, { contentType: 5 },
        { userProperties: { a: 'x\u0001' } }, { userProperties: { a: 'x\u001F' } }, { userProperties: { a: '\u0085' } },
        { userProperties: { 'k\u0001': 'v' } }, { userProperties: { 'k\u007F': 'v' } }, { userProperties: { a: 'x\u0000' } },
        { userProperties: { 'k\u0000': 'v' } }, { userProperties: { a: '\uD800' } }, { userProperties: { '\uDC00': 'v' } },
        { userProperties: { a: '\uFFFF' } }, { userProperties: { a: String.fromCodePoint(0x10FFFE) } },
        { userProperties: { a: big } }, { userProperties: { [big]: 'v' } }, { userProperties: { a: ['ok', 'x\u0002'] } },
        { userProperties: { a: null } }, { userProperties: { a: 5 } }, { userProperties: 'x' }, { userProperties: [] },
        { responseTopic: 'a/+' }, { responseTopic: 'a/#' }, { responseTopic: '+' }, { responseTopic: '' },
        { responseTopic: 'a\u0001' }, { responseTopic: 'a\u0000' }, { responseTopic: 'a\u0090' }, { responseTopic: 'a\uD800' },
        { responseTopic: 'a\uFFFE' }, { responseTopic: big }, { responseTopic: 5 },
        { correlationData: Buffer.alloc(70000) }, { correlationData: big }, { correlationData: 42 }, { correlationData: {} },
        { payloadFormatIndicator: 1 }, { payloadFormatIndicator: 'true' },
        { foo: 1 }, { topicAlias: 1 }, { subscriptionIdentifier: 1 }, { sessionExpiryInterval: 1 },
    ];
    const subscribeProperties: unknown[] = [
        { subscriptionIdentifier: 0 }, { subscriptionIdentifier: -1 }, { subscriptionIdentifier: 1.5 },
        { subscriptionIdentifier: 268435456 }, { subscriptionIdentifier: '1' },
        { userProperties: { a: 'x\u0001' } }, { userProperties: { 'k\u0001': 'v' } }, { userProperties: { a: '\u009F' } },
        { userProperties: { a: '\uD800' } }, { userProperties: { a: '\uFFFE' } }, { userProperties: { a: big } },
        { userProperties: { a: 'x\u0000' } }, { contentType: 'x' }, { foo: 1 },
    ];
    return [
        ...batches('MQTT 5 publish refuses bad properties', [
            ...publishProperties.map((properties) => publishCall(`${T}/v5`, 'x', { qos: 1, properties }, MqttErrorCode.InvalidOptions)),
            publishCall(`${T}/v5`, 'x', { qos: 1, properties: 'x' }, MqttErrorCode.InvalidOptions),
            publishCall(`${T}/v5`, 'x', { qos: 1, properties: [] }, MqttErrorCode.InvalidOptions),
        ]),
        ...batches('MQTT 5 subscribe refuses bad properties and flags', [
            ...subscribeProperties.map((properties, i) =>
                subscribeCall(`${T}/v5/${i}`, { qos: 1, properties }, new RecordingListener(), MqttErrorCode.InvalidOptions)),
            ...[{ nl: 'yes' }, { rap: 1 }, { rh: 3 }, { rh: -1 }].map((flags, i) =>
                subscribeCall(`${T}/v5/flags/${i}`, { qos: 1, ...flags }, new RecordingListener(), MqttErrorCode.InvalidOptions)),
        ]),
    ];
}

const V4_BATCHES = v4Batches();
const V5_BATCHES = v5Batches();
const count = (list: readonly Batch[]): number => list.reduce((n, b) => n + b.calls.length, 0);

// ---------------------------------------------------------------------------------------------
// The connection under test, and the check that it still serves.

interface Snapshot {
    readonly reconnects: number;
    readonly maxQos: 0 | 1 | 2 | null;
    readonly losses: number;
    readonly subscriptions: string;
}

/**
 * An open connection subscribed (QoS 1) to a probe topic of its own. After a batch, check()
 * publishes a QoS 1 message there and waits for it; when the connection turns out disturbed it
 * is replaced by a fresh one, so that the next batch is judged on its own.
 */
class ProbedConnection {
    private _connection: MqttConnection | null = null;
    private readonly _listener = new RecordingListener();
    public readonly topic = uniqueTopic('badcalls-probe');
    private _losses = 0;
    private _sent = 0;

    public constructor(private readonly _f: Fixture, private readonly _url: string, private readonly _tuples: unknown[]) {}

    public get connection(): MqttConnection {
        assert.ok(this._connection, 'the connection is open');
        return this._connection;
    }

    public async open(): Promise<void> {
        const connection = this._f.connection(this._url, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 500,
            'options.connect_timeout', 5000, ...this._tuples);
        connection.addStateListener((status) => {
            if (this._connection === connection && status.state !== 'connected') this._losses++;
        });
        await connection.open(null);
        await connection.subscribe(this.topic, { qos: 1 }, this._listener);
        this._connection = connection;
    }

    private subscriptionsText(): string {
        return this.connection.getSubscriptions().map((s) => `${show(s.topic)}@${s.qos}`).sort().join(', ');
    }

    public snapshot(): Snapshot {
        const status = this.connection.getStatus();
        return { reconnects: status.reconnects, maxQos: status.maxQos, losses: this._losses, subscriptions: this.subscriptionsText() };
    }

    /** What is wrong with the connection since `before`: an empty list when it still serves as it did. */
    public async check(before: Snapshot): Promise<string[]> {
        const connection = this.connection;
        const problems: string[] = [];
        const lastError = (): string => {
            const error = connection.getStatus().lastError;
            return error !== null ? ` (last error: ${error})` : '';
        };
        // Once the connection is known to have dropped, waiting for the probe tells nothing more.
        if (this._losses !== before.losses) {
            problems.push(`the connection left the connected state ${this._losses - before.losses} time(s)${lastError()}; probe publish skipped`);
        } else {
            const payload = `probe-${++this._sent}`;
            const started = Date.now();
            const published = await bounded(() => connection.publish(this.topic, payload, { qos: 1 }));
            if (published.kind === 'pending') {
                problems.push(`the probe publish (QoS 1) to ${show(this.topic)} did not settle within ${BOUND_MS / 1000} s`);
            } else if (published.kind !== 'resolved') {
                problems.push(`the probe publish (QoS 1) failed: ${describeError(published.error)}`);
            } else {
                const arrived = (): boolean => this._listener.received.some((r) => r.data.toString() === payload);
                while (!arrived() && Date.now() - started < BOUND_MS) await new Promise((resolve) => setTimeout(resolve, 5));
                if (!arrived()) problems.push(`the probe message (QoS 1) did not arrive at the listener within ${BOUND_MS / 1000} s`);
            }
            if (this._losses !== before.losses) problems.push(`the connection left the connected state ${this._losses - before.losses} time(s)${lastError()}`);
        }
        const status = connection.getStatus();
        if (status.state !== 'connected') problems.push(`getStatus().state is '${status.state}', not 'connected'`);
        if (!connection.isConnected()) problems.push('isConnected() is false');
        if (status.reconnects !== before.reconnects) {
            problems.push(`getStatus().reconnects went from ${before.reconnects} to ${status.reconnects}: the broker dropped the connection`);
        }
        // A drop on a QoS 2 publish reads as a broker without QoS 2 (see MqttErrorCode.QosNotSupported).
        if (status.maxQos !== before.maxQos) {
            problems.push(`getStatus().maxQos went from ${before.maxQos} to ${status.maxQos}: QoS 2 publishes are refused from now on`);
        }
        if (status.pendingPublishes !== 0) problems.push(`getStatus().pendingPublishes is ${status.pendingPublishes}: a publish is still waiting for the broker`);
        const subscriptions = this.subscriptionsText();
        if (subscriptions !== before.subscriptions) {
            problems.push(`the subscriptions changed: [${before.subscriptions}] became [${subscriptions}]`);
        }
        return problems;
    }

    /** Closes the connection (at most BOUND_MS) and opens a fresh one. */
    public async replace(): Promise<void> {
        const old = this._connection;
        this._connection = null;
        if (old) await bounded(() => old.close(null));
        await this.open();
    }
}

/** What is wrong with how a call settled: null when it did as it must. */
function judge(call: BadCall, outcome: Outcome): string | null {
    const expected = call.mustResolve ? 'to resolve'
        : `a rejection with BadRequestException ${call.codes.join(' or ')}${call.mayResolve ? ' (or to be ignored: resolve)' : ''}`;
    switch (outcome.kind) {
        case 'pending':
            return `${call.what} did not settle within ${BOUND_MS / 1000} s; expected ${expected}`;
        case 'threw':
            return `${call.what} threw synchronously (${describeError(outcome.error)}) instead of returning a rejected promise`;
        case 'resolved':
            return call.mustResolve || call.mayResolve ? null : `${call.what} resolved; expected ${expected}`;
        case 'rejected': {
            const err = outcome.error;
            if (!call.mustResolve && err instanceof BadRequestException && (call.codes as readonly string[]).includes(err.code)) return null;
            return `${call.what} rejected with ${describeError(err)}; expected ${expected}`;
        }
    }
}

/** Makes the batch's calls at once, each bounded, then checks the connection; fails listing every problem. */
async function runBatch(probe: ProbedConnection, batch: Batch): Promise<void> {
    const before = probe.snapshot();
    const connection = probe.connection as unknown as LooseConnection;
    const outcomes = await Promise.all(batch.calls.map((call) => bounded(() => call.run(connection, probe.topic))));
    const problems = batch.calls.map((call, i) => judge(call, outcomes[i])).filter((p): p is string => p !== null);
    const broken = await probe.check(before);
    if (broken.length > 0) {
        // A fresh connection for the next batch, so that each is judged on its own.
        problems.push(`after the batch: ${broken.join('; ')}`);
        await probe.replace();
    }
    if (problems.length > 0) {
        assert.fail(`${problems.length} problem(s) in ${batch.calls.length} calls:\n  ${problems.join('\n  ')}`);
    }
}

for (const { kind, skip } of EACH_BROKER) {
    const mqtt5Skip = kind === 'aedes' ? 'Aedes does not support MQTT 5 (it refuses protocol_version 5)' : skip;
    // Well under 60 s once every call is refused up front; calls that jam take their 3 s bound each batch.
    describe(`MqttConnection bad calls on an open connection (${kind})`, { skip, timeout: 120000 }, () => {
        const f = suiteFixture();
        let broker: TestBroker;
        let v4: ProbedConnection;
        let v5: ProbedConnection | null = null;

        before(async () => {
            broker = await f.broker(kind);
            v4 = new ProbedConnection(f, broker.url, []);
            await v4.open();
        });

        for (const batch of V4_BATCHES) {
            it(batch.name, async () => runBatch(v4, batch));
        }

        for (const batch of V5_BATCHES) {
            it(batch.name, { skip: mqtt5Skip }, async () => {
                if (!v5) {
                    v5 = new ProbedConnection(f, broker.url, ['options.protocol_version', 5]);
                    await v5.open();
                }
                await runBatch(v5, batch);
            });
        }

        it(`makes at least ${MIN_CALLS} bad calls`, (t) => {
            const calls = count(V4_BATCHES) + (mqtt5Skip === false ? count(V5_BATCHES) : 0);
            t.diagnostic(`${calls} bad calls on ${kind}`);
            assert.ok(calls >= MIN_CALLS, `${calls} calls`);
        });
    });
}

// Soak run: a numbered QoS 1 stream through network faults and broker crashes, for minutes.
//
//   npm run soak -- --minutes 10 [--broker mosquitto|aedes] [--rate 500] [--fault-every 20] [--report-every 10] [--no-faults] [--fault-kinds cut,stall,refuse,crash]
//
// Prints a line per report period (acknowledged, received, missing, duplicates, reconnects,
// faults, RSS, heap) and a summary. A lost message that reached the client was lost by us; one that
// never did, by the broker. Exits 1 when we lost one, when the broker lost one without crashing
// (Aedes excepted), or when the heap grew after warm-up.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../src';
import { delay, mosquittoAvailable, startAedes, startMosquitto, waitFor } from '../test/helpers/brokers';
import { FaultProxy } from '../test/helpers/faultProxy';
import { NumberedStream, WireTap } from '../test/helpers/numberedStream';

interface Options {
    minutes: number;
    broker: 'mosquitto' | 'aedes';
    rate: number;
    faultEvery: number;
    reportEvery: number;
    /** False with --no-faults: the same stream without faults, to compare memory. */
    faults: boolean;
    /** The kinds of fault to pick from (--fault-kinds cut,stall,refuse,crash). */
    faultKinds: FaultKind[];
    /** --mqtt5: MQTT 5 with a session expiry and topic aliases (Mosquitto only). */
    mqtt5: boolean;
}

const FAULT_KINDS = ['cut', 'stall', 'refuse', 'crash'] as const;
type FaultKind = typeof FAULT_KINDS[number];

interface Broker {
    readonly host: string;
    readonly port: number;
    crash(): Promise<void>;
    revive(): Promise<void>;
    stop(): Promise<void>;
}

interface Sample {
    readonly minute: number;
    readonly rssMb: number;
    readonly heapMb: number;
    readonly heapTotalMb: number;
    /** Buffers and other memory outside the V8 heap. */
    readonly externalMb: number;
}

const WINDOW = 10;
/** Share of the run treated as warm-up before memory must stay flat. */
const WARMUP_SHARE = 0.2;
/** Heap growth after warm-up (MiB) still counted as flat: the GC's own variation. */
const FLAT_HEAP_MB = 8;

function readOptions(): Options {
    const { values } = parseArgs({
        options: {
            minutes: { type: 'string', default: '10' },
            broker: { type: 'string', default: mosquittoAvailable() ? 'mosquitto' : 'aedes' },
            rate: { type: 'string', default: '500' },
            'fault-every': { type: 'string', default: '20' },
            'no-faults': { type: 'boolean', default: false },
            'fault-kinds': { type: 'string', default: FAULT_KINDS.join(',') },
            'report-every': { type: 'string', default: '10' },
            mqtt5: { type: 'boolean', default: false },
        },
    });
    const number = (name: string, text: string | undefined): number => {
        const value = Number(text);
        if (!(value > 0)) throw new Error(`--${name} must be a positive number, not '${text}'`);
        return value;
    };
    if (values.broker !== 'mosquitto' && values.broker !== 'aedes') throw new Error(`--broker must be mosquitto or aedes, not '${values.broker}'`);
    if (values.mqtt5 === true && values.broker === 'aedes') throw new Error('--mqtt5 needs --broker mosquitto: Aedes has no MQTT 5');
    const kinds = (values['fault-kinds'] ?? '').split(',').map((k) => k.trim());
    const unknown = kinds.filter((k) => !(FAULT_KINDS as readonly string[]).includes(k));
    if (kinds.length === 0 || unknown.length > 0) throw new Error(`--fault-kinds takes ${FAULT_KINDS.join(', ')}, not '${unknown.join(',')}'`);
    return {
        minutes: number('minutes', values.minutes),
        broker: values.broker,
        rate: number('rate', values.rate),
        faultEvery: number('fault-every', values['fault-every']),
        reportEvery: number('report-every', values['report-every']),
        faults: !values['no-faults'],
        faultKinds: kinds as FaultKind[],
        mqtt5: values.mqtt5 === true,
    };
}

async function startBroker(kind: Options['broker']): Promise<Broker> {
    if (kind === 'aedes') {
        const aedes = await startAedes({ keepSessions: true });
        return { host: aedes.host, port: aedes.port, crash: () => aedes.broker.kill(), revive: () => aedes.broker.restart(), stop: () => aedes.stop() };
    }
    const mosquitto = await startMosquitto({ persistence: true, extraConfig: ['autosave_interval 1', 'autosave_on_changes true'] });
    return {
        host: mosquitto.host, port: mosquitto.port,
        crash: () => mosquitto.kill('SIGKILL'), revive: () => mosquitto.start(), stop: () => mosquitto.cleanup(),
    };
}

function connection(url: string, ...tuples: unknown[]): MqttConnection {
    const c = new MqttConnection();
    c.configure(ConfigParams.fromTuples('connection.uri', url, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 2000,
        'options.keepalive_timeout', 2000, 'options.connect_timeout', 5000, 'options.max_offline_messages', 100000, ...tuples));
    return c;
}

/** One fault, picked at random, and the recovery from it. */
async function injectFault(kinds: FaultKind[], proxy: FaultProxy, broker: Broker, online: () => boolean): Promise<string> {
    const fault = kinds[Math.floor(Math.random() * kinds.length)];
    if (fault === 'crash') {
        await broker.crash();
        await delay(500);
        await broker.revive();
    } else {
        // A stall the keepalive does not notice within 20 s is simply let through.
        await proxy.inject(fault, { refuseMs: 2000, noticed: () => !online(), timeoutMs: 20000 });
    }
    return fault;
}

/** With broker crashes on Mosquitto (or Aedes under faults), the broker itself may lose a few messages. */
function allowBrokerLoss(options: Options): boolean {
    return options.faults && (options.broker === 'aedes' || options.faultKinds.includes('crash'));
}

function memory(minute: number): Sample {
    (globalThis as { gc?: () => void }).gc?.();
    const usage = process.memoryUsage();
    return {
        minute, rssMb: usage.rss / 2 ** 20, heapMb: usage.heapUsed / 2 ** 20,
        heapTotalMb: usage.heapTotal / 2 ** 20, externalMb: usage.external / 2 ** 20,
    };
}

async function main(): Promise<void> {
    const options = readOptions();
    if (!(globalThis as { gc?: unknown }).gc) console.log('note: run with node --expose-gc (npm run soak does) for steady heap readings');
    const broker = await startBroker(options.broker);
    const proxy = await FaultProxy.start(broker.host, broker.port);
    const v5 = options.mqtt5 ? ['options.protocol_version', 5, 'options.topic_alias_maximum', 10] : [];
    const pub = connection(proxy.url, ...v5);
    const sub = connection(proxy.url, 'client_id', `soak${randomBytes(6).toString('hex')}`, 'options.clean_session', false, ...v5);
    await pub.open(null);
    await sub.open(null);
    // Each of the WINDOW publishing slots pauses between messages; together they make about `rate`.
    const stream = new NumberedStream(pub, `soak/${randomBytes(4).toString('hex')}`, WINDOW, Math.max(1, Math.round(WINDOW * 1000 / options.rate)));
    await sub.subscribe(stream.topic, { qos: 1 }, stream);
    const wire = new WireTap(sub.getConnection()!, stream.topic);
    console.log(`soak: ${options.minutes} min on ${options.broker}${options.mqtt5 ? ' (MQTT 5, topic aliases)' : ''} through a fault proxy, about ${options.rate} msg/s, ` +
        `${options.faults ? `a fault every ~${options.faultEvery} s` : 'no faults'}; node ${process.version}`);

    const started = Date.now();
    const end = started + options.minutes * 60000;
    const samples: Sample[] = [];
    const faults = new Map<string, number>();
    let running = true;
    const minute = (): number => (Date.now() - started) / 60000;
    const report = (): void => {
        const c = stream.counts();
        const sample = memory(minute());
        samples.push(sample);
        const faultText = [...faults].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
        console.log(`${(sample.minute * 60).toFixed(0).padStart(5)} s  acked ${c.acknowledged}  received ${c.received}  ` +
            `missing ${c.missing}  dups ${c.duplicates}  reconnects pub ${pub.getStatus().reconnects} sub ${sub.getStatus().reconnects}  ` +
            `faults ${faultText}  rss ${sample.rssMb.toFixed(1)} MiB  heap ${sample.heapMb.toFixed(1)}/${sample.heapTotalMb.toFixed(1)} MiB  ` +
            `external ${sample.externalMb.toFixed(1)} MiB`);
    };
    const reporter = setInterval(report, options.reportEvery * 1000);
    const faulting = (async () => {
        while (running && options.faults) {
            await delay(options.faultEvery * 1000 * (0.5 + Math.random()));
            if (!running || Date.now() > end - 5000) break;
            const fault = await injectFault(options.faultKinds, proxy, broker, () => sub.isConnected() && pub.isConnected());
            faults.set(fault, (faults.get(fault) ?? 0) + 1);
        }
    })();

    stream.start();
    await delay(Math.max(0, end - Date.now()));
    running = false;
    await faulting;
    await waitFor(() => sub.isConnected() && pub.isConnected(), 60000, 'both connections back').catch(() => undefined);
    await stream.stop();
    await waitFor(() => stream.counts().missing === 0, 60000, 'the stream to drain').catch(() => undefined);
    clearInterval(reporter);
    report();

    const c = stream.counts();
    const after = samples.filter((s) => s.minute >= options.minutes * WARMUP_SHARE);
    const heapGrowth = after.length >= 2 ? after.at(-1)!.heapMb - Math.min(...after.map((s) => s.heapMb)) : 0;
    const rssGrowth = after.length >= 2 ? after.at(-1)!.rssMb - after[0].rssMb : 0;
    const flat = heapGrowth <= FLAT_HEAP_MB;
    console.log('--- summary ---');
    // A lost number that reached the client was lost by us; one that never did, by the broker (a SIGKILLed
    // Mosquitto acknowledges before it saves).
    const lost = stream.missingNumbers(Number.MAX_SAFE_INTEGER);
    const ours = lost.filter((n) => wire.has(n));
    console.log(`${(c.acknowledged / ((Date.now() - started) / 1000)).toFixed(0)} msg/s on average; ` +
        `acknowledged ${c.acknowledged}, received ${c.received}, lost ${c.missing}: ${ours.length} by us, ` +
        `${lost.length - ours.length} by the broker (never sent to the client)` +
        (c.missing > 0 ? ` (e.g. ${lost.slice(0, 20).join(', ')})` : '') + `, duplicates ${c.duplicates}, publish retries ${c.retries}`);
    console.log(`reconnects: publisher ${pub.getStatus().reconnects}, subscriber ${sub.getStatus().reconnects}; ` +
        `faults: ${[...faults].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);
    console.log(`memory after warm-up (${(options.minutes * WARMUP_SHARE).toFixed(1)} min): heap ${after[0]?.heapMb.toFixed(1)} -> ` +
        `${after.at(-1)?.heapMb.toFixed(1)} MiB (growth over its minimum ${heapGrowth.toFixed(1)} MiB), ` +
        `rss ${rssGrowth >= 0 ? '+' : ''}${rssGrowth.toFixed(1)} MiB: ${flat ? 'flat' : 'GROWING'}`);

    await sub.close(null);
    await pub.close(null);
    await proxy.stop();
    await broker.stop();
    process.exitCode = ours.length === 0 && (c.missing === 0 || allowBrokerLoss(options)) && flat ? 0 : 1;
}

main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
});

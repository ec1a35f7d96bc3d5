// The brokers of the compatibility matrix (npm run test:brokers): how to start each, and what each lacks.
import { MqttErrorCode } from '../../src';
import { mosquittoSkip, startAedes, startMosquitto, type TestBroker } from '../helpers/brokers';
import { natsSkip, startNats } from '../helpers/nats';
import { rabbitmqSkip, startRabbitMq } from '../helpers/rabbitmq';

/** The features of the matrix: its rows, in order. Each is a key of the test titles (`[broker/feature]`). */
export const FEATURES = {
    'connection-suite': 'Connection conformance suite',
    'queue-suite': 'Queue conformance suite',
    'queue-acks': 'Queue acknowledgement after processing',
    qos0: 'QoS 0',
    qos1: 'QoS 1',
    qos2: 'QoS 2',
    retained: 'Retained messages',
    wildcards: 'Wildcards (+, #)',
    shared: 'Shared subscriptions ($share)',
    persistent: 'Persistent sessions',
    mqtt5: 'MQTT 5',
    will: 'Will messages',
    restart: 'Reconnect after broker restart',
    auth: 'Auth failure',
} as const;

export type Feature = keyof typeof FEATURES;

/** What a started matrix broker offers: a TestBroker that can also die abruptly. */
export interface MatrixTestBroker extends TestBroker {
    /** Stops the broker and removes what it kept on disk. */
    cleanup(): Promise<void>;
}

export interface MatrixBrokerOptions {
    /** user -> password: anonymous clients are refused. */
    passwords?: Record<string, string>;
}

/** A broker of the matrix: its columns. */
export interface MatrixBroker {
    readonly id: 'aedes' | 'mosquitto' | 'nats' | 'rabbitmq';
    readonly name: string;
    /** A reason to skip (not installed), or false. */
    readonly skip: string | false;
    /** Starts a broker that keeps sessions and retained messages across restart(). */
    start(options?: MatrixBrokerOptions): Promise<MatrixTestBroker>;
    /** The features it lacks: each test checks that the module reports the lack as it should. */
    readonly lacks: ReadonlySet<Feature>;
    /** Without MQTT 5: how open() with protocol_version 5 fails (the error code, and the CONNACK reason code when one comes). */
    readonly mqtt5Refusal?: { readonly code: string; readonly reasonCode?: number };
    /** Where it departs from MQTT in what the conformance suites check (see ConformanceDeviations). */
    readonly raisedQosKeepsOldSubscription?: boolean;
}

const ALL_BROKERS: readonly MatrixBroker[] = [
    {
        id: 'aedes',
        name: 'Aedes (embedded)',
        skip: false,
        start: async (options) => {
            const passwords = options?.passwords;
            const broker = await startAedes({
                keepSessions: true,
                ...(passwords ? {
                    authenticate: (_id: string, user: string | undefined, password: Buffer | undefined) =>
                        user !== undefined && password !== undefined && passwords[user] === password.toString('utf8'),
                } : {}),
            });
            return { ...broker, url: broker.url, cleanup: () => broker.stop() };
        },
        lacks: new Set<Feature>(['mqtt5']),
        mqtt5Refusal: { code: MqttErrorCode.ConnectRefused, reasonCode: 1 },
    },
    {
        id: 'mosquitto',
        name: 'Mosquitto',
        skip: mosquittoSkip(),
        start: async (options) => startMosquitto({ persistence: true, ...(options?.passwords ? { passwords: options.passwords } : {}) }),
        lacks: new Set<Feature>(),
    },
    {
        id: 'nats',
        name: 'NATS (MQTT gateway)',
        skip: natsSkip(),
        start: async (options) => startNats(options?.passwords ? { passwords: options.passwords } : {}),
        lacks: new Set<Feature>(['qos2', 'mqtt5', 'shared']),
        mqtt5Refusal: { code: MqttErrorCode.ConnectRefused, reasonCode: 1 },
    },
    {
        id: 'rabbitmq',
        name: 'RabbitMQ (rabbitmq_mqtt)',
        skip: rabbitmqSkip(),
        start: async (options) => startRabbitMq(options?.passwords ? { passwords: options.passwords } : {}),
        lacks: new Set<Feature>(['qos2', 'mqtt5', 'shared']),
        // It cannot parse an MQTT 5 CONNECT and hangs up: the attempts fail until connect_timeout.
        mqtt5Refusal: { code: MqttErrorCode.ConnectFailed },
        raisedQosKeepsOldSubscription: true,
    },
];

/** The brokers of this run: all, or those named in MATRIX_ONLY (ids, comma-separated; scripts/test-brokers.mjs --only). */
export const MATRIX_BROKERS: readonly MatrixBroker[] = process.env.MATRIX_ONLY
    ? ALL_BROKERS.filter((b) => process.env.MATRIX_ONLY!.split(',').includes(b.id))
    : ALL_BROKERS;

/** The title prefix that puts a test in a cell of the matrix. */
export function cellTitle(broker: MatrixBroker, feature: Feature, title: string): string {
    return `[${broker.id}/${feature}] ${title}`;
}

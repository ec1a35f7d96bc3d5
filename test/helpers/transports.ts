// MQTT.js clients over TLS and WebSocket for tests: connect, refusal, round trip.
import assert from 'node:assert/strict';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

import { uniqueTopic } from './net';

const MESSAGE_TIMEOUT_MS = 5000;

/**
 * Codes of a server certificate the client does not trust: Node reports
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE when the server sends its certificate alone and
 * SELF_SIGNED_CERT_IN_CHAIN when it sends its CA too (Node and Mosquitto servers both do when
 * they are given that CA to check client certificates).
 */
export const UNTRUSTED_SERVER = /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/;

/**
 * Connects once (no automatic reconnects). Rejects on an error and also when the connection
 * closes before CONNACK without one: plain `connectAsync` would then never settle (its connack
 * timer stops on close), as after a Node TLS server drops a client certificate it does not trust.
 */
export function connectOnce(url: string, options: IClientOptions = {}): Promise<MqttClient> {
    return mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options }, false);
}

/** The error of a connection attempt that must fail; fails the test when it connects. */
export async function refusal(url: string, options: IClientOptions = {}): Promise<Error & { code?: unknown }> {
    let client: MqttClient;
    try {
        client = await connectOnce(url, options);
    } catch (err) {
        assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
        return err;
    }
    await client.endAsync(true);
    assert.fail(`connected to ${url} although a refusal was expected`);
}

/**
 * Publishes one QoS 1 message from a publisher connected to `publishUrl` to a subscriber
 * connected to `url` (each with its options) and checks it arrives; ends both clients.
 */
export async function roundTrip(
    url: string,
    options: IClientOptions = {},
    publishUrl = url,
    publishOptions = options,
): Promise<void> {
    const topic = uniqueTopic('transports');
    const clients: MqttClient[] = [];
    try {
        const subscriber = await connectOnce(url, options);
        clients.push(subscriber);
        const publisher = await connectOnce(publishUrl, publishOptions);
        clients.push(publisher);
        const received = new Promise<[string, string]>((resolve) => {
            subscriber.once('message', (receivedTopic, payload) => resolve([receivedTopic, payload.toString()]));
        });
        await subscriber.subscribeAsync(topic, { qos: 1 });
        await publisher.publishAsync(topic, `over ${publishUrl}`, { qos: 1 });
        assert.deepEqual(await within(received, `the message on ${url}`), [topic, `over ${publishUrl}`]);
    } finally {
        await Promise.all(clients.map((client) => client.endAsync(true)));
    }
}

/** `promise`, or a rejection naming `what` when it has not settled within MESSAGE_TIMEOUT_MS. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no ${what} within ${MESSAGE_TIMEOUT_MS} ms`)), MESSAGE_TIMEOUT_MS);
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

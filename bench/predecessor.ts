// The predecessor, pip-services3-mqtt-node 3.x (callbacks, MQTT.js 4), wrapped in promises for
// the benchmarks. Its connections default to the host name as client id, so two of them would
// take each other's session: each gets its own here.
import { randomBytes } from 'node:crypto';

import { ConfigParams } from 'pip-services3-commons-node';
import { MqttConnection, MqttMessageQueue } from 'pip-services3-mqtt-node';

/** Calls a callback-style method and resolves with its result. */
export function promised<T = void>(call: (callback: (err: unknown, result?: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
        call((err, result) => (err ? reject(err instanceof Error ? err : new Error(JSON.stringify(err))) : resolve(result as T)));
    });
}

/** A unique client id for a predecessor component. */
function clientId(): string {
    return `pred${randomBytes(6).toString('hex')}`;
}

/** An open predecessor MqttConnection. */
export async function openPredecessorConnection(url: string): Promise<MqttConnection> {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples('connection.uri', url, 'client_id', clientId()));
    await promised((cb) => connection.open(null as unknown as string, cb));
    return connection;
}

/** An open predecessor MqttMessageQueue on `topic`. */
export async function openPredecessorQueue(url: string, topic: string, ...tuples: unknown[]): Promise<MqttMessageQueue> {
    const queue = new MqttMessageQueue(topic);
    queue.configure(ConfigParams.fromTuples('connection.uri', url, 'client_id', clientId(), 'topic', topic, ...tuples));
    await promised((cb) => queue.open(null as unknown as string, cb));
    return queue;
}

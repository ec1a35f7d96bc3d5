import type { IStore, MqttClient, Packet } from 'mqtt';

// The private parts of MQTT.js 5 this module relies on, each behind one typed accessor, and
// nowhere else. MQTT.js has no public API for them. test/connect/link/mqttInternals.test.ts
// checks each accessor against the installed MQTT.js, so an upgrade that moves one fails there
// first. Each accessor says what it returns when the field is not there.

/** An entry of MQTT.js's queue of publishes made while it resends its store or is offline. */
export interface MqttQueuedPublish {
    readonly callback?: unknown;
}

interface ClientPrivates {
    _storeProcessingQueue?: MqttQueuedPublish[];
    _reconnect?: () => void;
    _clearReconnect?: () => void;
    _reconnectCount?: number;
    connackTimer?: NodeJS.Timeout;
    _onConnackTimeout?: () => void;
}

/**
 * The publishes MQTT.js queues while it resends its stored ones after a CONNACK (or while it is
 * offline and has not stored them yet), in order: `client._storeProcessingQueue`. Undefined
 * when MQTT.js has no such queue.
 */
export function storeProcessingQueue(client: MqttClient): MqttQueuedPublish[] | undefined {
    const queue = (client as unknown as ClientPrivates)._storeProcessingQueue;
    return Array.isArray(queue) ? queue : undefined;
}

/**
 * The packets an MQTT.js `Store` (the default outgoing store) holds, by message id: its private
 * `_inflights` Map. Null for a store of another kind.
 */
export function storedPackets(store: IStore): ReadonlyMap<number, Packet> | null {
    const inflights = (store as unknown as { _inflights?: unknown })._inflights;
    return inflights instanceof Map ? inflights as Map<number, Packet> : null;
}

/**
 * Clears MQTT.js's reconnect timer (`_clearReconnect`), as its own close handling does before it
 * arms a new one.
 */
export function clearReconnectTimer(client: MqttClient): void {
    (client as unknown as ClientPrivates)._clearReconnect?.();
}

/**
 * Makes MQTT.js's next connection attempt go to the first of its `servers`. MQTT.js moves on to
 * the next server at every attempt (`_reconnectCount`, the index of the next one) and never starts
 * over, so without this the reconnect after any loss goes to the next server, however well the
 * current one works.
 */
export function restartServerRotation(client: MqttClient): void {
    (client as unknown as ClientPrivates)._reconnectCount = 0;
}

/**
 * Gives the current connection attempt `ms` more to receive its CONNACK: MQTT.js's own wait
 * (`connackTimer`, armed by connect() with `connectTimeout`) is replaced by one of `ms` that ends
 * the attempt the same way (`_onConnackTimeout`). False when MQTT.js has neither (nothing changed).
 */
export function rearmConnackTimeout(client: MqttClient, ms: number): boolean {
    const privates = client as unknown as ClientPrivates;
    const timeout = privates._onConnackTimeout;
    if (typeof timeout !== 'function' || !('connackTimer' in privates)) return false;
    clearTimeout(privates.connackTimer);
    privates.connackTimer = setTimeout(() => timeout.call(client), ms);
    return true;
}

/** Starts a reconnect attempt now (`_reconnect`), as MQTT.js's reconnect timer does. */
export function reconnectNow(client: MqttClient): void {
    (client as unknown as ClientPrivates)._reconnect?.();
}

/** MQTT.js's `_sendPacket(packet, cb, cbStorePut, noStore)`: every packet the client writes goes through it. */
export type MqttPacketSender = (packet: Packet, cb?: (err?: Error) => void, cbStorePut?: unknown, noStore?: boolean) => void;

/**
 * Puts `intercept` in front of every PUBACK and PUBCOMP the client writes (the last answer to an
 * incoming QoS 1 or QoS 2 message), in `_sendPacket`, which every packet goes through: it gets
 * the packet, MQTT.js's callback (the parser waits for it before it reads the next packet) and the
 * original sender, and decides when to send it. Other packets go straight on. False when MQTT.js
 * has no `_sendPacket` (nothing is changed then).
 */
export function interceptAcknowledgements(
    client: MqttClient, intercept: (packet: Packet, cb: ((err?: Error) => void) | undefined, send: MqttPacketSender) => void,
): boolean {
    const privates = client as unknown as { _sendPacket?: MqttPacketSender };
    const original = privates._sendPacket;
    if (typeof original !== 'function') return false;
    const send: MqttPacketSender = original.bind(client);
    privates._sendPacket = (packet, cb, cbStorePut, noStore) => {
        if (packet.cmd === 'puback' || packet.cmd === 'pubcomp') intercept(packet, cb, send);
        else send(packet, cb, cbStorePut, noStore);
    };
    return true;
}

import type { IPublishPacket } from 'mqtt';

import { MqttTopicRouter } from './MqttTopicRouter';

/** A message kept by [[MqttUnroutedHold]]. */
export interface MqttHeldMessage {
    readonly topic: string;
    readonly payload: Buffer;
    readonly packet: IPublishPacket;
}

/**
 * Messages that a persistent session delivered for filters no listener has yet. A broker that
 * kept the session sends its queued messages right after CONNACK, before the new process had a
 * chance to subscribe its listeners again; MQTT.js has acknowledged them by then, so dropping
 * them would lose exactly what the persistent session kept. They wait here, in arrival order,
 * for the first listener that subscribes to a matching filter.
 *
 * Bounded: beyond `limit` messages new ones are dropped (and counted by the caller).
 */
export class MqttUnroutedHold {
    private _messages: MqttHeldMessage[] = [];

    public constructor(private readonly _limit: number) {}

    /** How many messages wait. */
    public get size(): number {
        return this._messages.length;
    }

    /** Keeps a message; false when the hold is full and the message was not kept. */
    public hold(message: MqttHeldMessage): boolean {
        if (this._messages.length >= this._limit) return false;
        this._messages.push(message);
        return true;
    }

    /** Removes and returns, in arrival order, the messages whose topics match a filter (no `$share/` prefix). */
    public take(matchFilter: string): MqttHeldMessage[] {
        if (this._messages.length === 0) return [];
        const router = new MqttTopicRouter<true>();
        router.add(matchFilter, true);
        const taken: MqttHeldMessage[] = [];
        const kept: MqttHeldMessage[] = [];
        for (const message of this._messages) {
            (router.match(message.topic).length > 0 ? taken : kept).push(message);
        }
        this._messages = kept;
        return taken;
    }

    /** Forgets everything. */
    public clear(): void {
        this._messages = [];
    }
}

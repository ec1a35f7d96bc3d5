import type { IPublishPacket } from 'mqtt';

import { MqttTopicRouter, type MqttRoute } from './MqttTopicRouter';

/** How many filters this process let go of are remembered (the oldest is forgotten first). */
const RELEASED_FILTERS = 10000;

/** A message kept by [[MqttUnroutedHold]]. */
export interface MqttHeldMessage {
    readonly topic: string;
    readonly payload: Buffer;
    readonly packet: IPublishPacket;
}

/**
 * Messages that a persistent session delivered for filters no listener has yet (and that this
 * process never unsubscribed). A broker that
 * kept the session sends its queued messages right after CONNACK, before the new process had a
 * chance to subscribe its listeners again; MQTT.js has acknowledged them by then, so dropping
 * them would lose exactly what the persistent session kept. They wait here, in arrival order,
 * for the first listener that subscribes to a matching filter.
 *
 * Only messages the session brought from before are held: a message for a filter this process
 * itself unsubscribed (its UNSUBSCRIBE still on its way, or sent after a reconnect) is not
 * wanted by anyone, and is dropped. The last 10000 such filters are remembered.
 *
 * Bounded: beyond `limit` messages new ones are dropped (and counted by the caller).
 */
export class MqttUnroutedHold {
    private _messages: MqttHeldMessage[] = [];
    private readonly _released = new MqttTopicRouter<string>();
    private readonly _releasedRoutes = new Map<string, MqttRoute<string>>();

    public constructor(private readonly _limit: number) {}

    /** How many messages wait. */
    public get size(): number {
        return this._messages.length;
    }

    /** Remembers that this process let go of a filter (no `$share/` prefix). */
    public released(matchFilter: string): void {
        if (this._releasedRoutes.has(matchFilter)) return;
        if (this._releasedRoutes.size >= RELEASED_FILTERS) {
            const [oldest, route] = this._releasedRoutes.entries().next().value as [string, MqttRoute<string>];
            this._released.remove(route);
            this._releasedRoutes.delete(oldest);
        }
        this._releasedRoutes.set(matchFilter, this._released.add(matchFilter, matchFilter));
    }

    /** True when the topic matches a filter this process let go of. */
    public wasReleased(topic: string): boolean {
        return this._releasedRoutes.size > 0 && this._released.match(topic).length > 0;
    }

    /** Keeps a message; false when the hold is full and the message was not kept. */
    public hold(message: MqttHeldMessage): boolean {
        if (this._messages.length >= this._limit) return false;
        this._messages.push(message);
        return true;
    }

    /**
     * A filter is subscribed (again): forgets that it was let go of, and removes and returns, in
     * arrival order, the held messages whose topics match it (no `$share/` prefix).
     */
    public take(matchFilter: string): MqttHeldMessage[] {
        const route = this._releasedRoutes.get(matchFilter);
        if (route) {
            this._released.remove(route);
            this._releasedRoutes.delete(matchFilter);
        }
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

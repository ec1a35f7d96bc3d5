import type { IClientSubscribeOptions } from 'mqtt';
import { BadRequestException, InvalidStateException } from 'pip-services3-commons-nodex';

import { NO_CID } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { closedError } from '../errors/MqttErrors';
import type { IMqttMessageListener } from '../IMqttMessageListener';
import { MqttSubscription } from '../MqttSubscription';
import { MqttFilterEntry, mqtt5Options, type MqttRegistration } from './MqttFilterEntry';
import { MqttFilterSync, type MqttFilterBroker } from './MqttFilterSync';
import { MqttTopicRouter } from './MqttTopicRouter';
import type { ParsedFilter } from '../MqttTopics';

/** What the subscriptions need of the live connection (MqttLink), beyond what MqttFilterSync needs. */
export interface MqttSubscriptionLink extends MqttFilterBroker {
    /** True from a CONNACK (once MQTT.js has resent what it kept) to the loss. */
    readonly connected: boolean;
    /** True once the link is ending (close()). */
    readonly ended: boolean;
    /** Throws `MQTT_NOT_CONNECTED` when the connection is down and will not come back. */
    checkUsable(): void;
}

/** Messages a persistent session brought for filters no listener has yet (MqttDispatcher keeps them). */
export interface MqttBacklog {
    /** Hands a new listener the held messages of its filter. */
    releaseHeld(matchFilter: string, listener: IMqttMessageListener): void;
    /** This process let go of a filter: messages still coming for it are not held. */
    released(matchFilter: string): void;
}

/**
 * The subscriptions of one connection, and the one owner of their state: filter entries by
 * broker filter, the router that finds the listeners of an incoming topic, and the policy of
 * subscribe() and unsubscribe(). While the connection is open it is attached to the link, and
 * its [[MqttFilterSync]] keeps the broker in line with the listeners; the link tells it when the
 * connection is lost and when it is back ([[lost]], [[resumed]]).
 *
 * An entry stays here while the broker may still hold its filter, even without listeners, so
 * that an UNSUBSCRIBE and a later SUBSCRIBE of the same filter go out in order.
 */
export class MqttSubscriptions {
    private readonly _entries = new Map<string, MqttFilterEntry>();
    private readonly _router = new MqttTopicRouter<IMqttMessageListener>();
    /** While open: the link, its filter sync, and where held messages wait. */
    private _attached: { link: MqttSubscriptionLink; sync: MqttFilterSync; backlog: MqttBacklog } | null = null;

    /** The connection opened: subscriptions from now on go to the broker through `link`. */
    public attach(link: MqttSubscriptionLink, backlog: MqttBacklog): void {
        const sync = new MqttFilterSync(link, (entry, registration) => this.removeRegistration(entry, registration), (entry) => this.dropIfIdle(entry));
        this._attached = { link, sync, backlog };
    }

    /** The connection closes: every subscription is dropped. */
    public detach(): void {
        this._attached = null;
        this.clear();
    }

    /**
     * Adds a listener to a filter, and resolves once the broker's SUBACK covers its QoS (at once when
     * the filter is already subscribed at this QoS or higher). The caller checked the input and the
     * broker's support; this checks the options against the filter's other listeners.
     * @throws BadRequestException `MQTT_INVALID_OPTIONS`, or what the broker's answer says (see MqttFilterSync).
     */
    public async subscribe(parsed: ParsedFilter, options: IClientSubscribeOptions, listener: IMqttMessageListener): Promise<void> {
        const attached = this.checkAttached();
        if (this.optionsConflict(parsed, options, listener)) {
            throw new BadRequestException(NO_CID, MqttErrorCode.InvalidOptions,
                'Invalid MQTT subscribe options: the other listeners of this filter subscribed with other nl, rap, rh or properties, ' +
                'and the broker holds one subscription per filter').withDetails('topic', parsed.brokerFilter);
        }
        attached.link.checkUsable();

        const { entry, registration, added } = this.add(parsed, options, listener);
        if (added) attached.backlog.releaseHeld(parsed.matchFilter, listener);
        if (!added && !entry.isWaiting(registration)) return;
        const covered = entry.waitFor(registration);
        void attached.sync.sync(entry);
        await covered;
    }

    /**
     * Removes a listener from a filter; when it was the last, the broker subscription is dropped
     * (UNSUBSCRIBE, awaited while connected; see MqttConnection.unsubscribe).
     * @throws ConnectionException `MQTT_UNSUBSCRIBE_FAILED`, InvalidStateException `MQTT_CLOSED`.
     */
    public async unsubscribe(topic: string, listener: IMqttMessageListener): Promise<void> {
        const entry = this.remove(topic, listener);
        if (!entry) return;
        const attached = this._attached;
        if (!attached) {
            this.dropIfIdle(entry);
            return;
        }
        const { link, sync, backlog } = attached;
        if (entry.registrations.size === 0) backlog.released(entry.parsed.matchFilter);
        const syncing = sync.sync(entry);
        // Other listeners keep the broker's subscription, or the broker holds none: nothing to wait for.
        if (entry.registrations.size > 0 || entry.brokerQos === null) return;
        // Down, or lost on the way: a persistent session gets the UNSUBSCRIBE after the reconnect.
        const lost = !link.connected || await new Promise<boolean>((resolve) => {
            const cancel = link.onNextLoss(() => resolve(true));
            void syncing.then(() => {
                cancel();
                resolve(false);
            });
        });
        if (link.ended) throw closedError(NO_CID);
        if (lost) {
            this.reportLateUnsubscribe(link, topic, entry, syncing);
            return;
        }
        if (entry.unsubscribeError) throw entry.unsubscribeError;
    }

    /** Logs an UNSUBSCRIBE that is refused after a reconnect (nobody waits for it any more). */
    private reportLateUnsubscribe(link: MqttSubscriptionLink, topic: string, entry: MqttFilterEntry, syncing: Promise<void>): void {
        void syncing.then(() => {
            const error = entry.unsubscribeError;
            // Closed before the reconnect: the session keeps the subscription, as a closed persistent session does.
            if (!error || (error instanceof InvalidStateException && error.code === MqttErrorCode.Closed)) return;
            link.logger.error(NO_CID, error, 'Failed to unsubscribe from MQTT topic %s after a reconnect', topic);
        });
    }

    /**
     * The connection was lost. With a clean session the broker forgets the subscriptions with it;
     * with `sessionKept` it should keep them (they are checked at the reconnect).
     */
    public lost(sessionKept: boolean): void {
        if (sessionKept) return;
        for (const entry of this._entries.values()) entry.lost();
    }

    /**
     * The connection is back. Every filter is subscribed again: the broker has no session (a
     * clean one, or it lost ours), or says it kept it but may have lost subscriptions made since
     * its last save. An identical SUBSCRIBE replaces a subscription without interrupting it
     * (MQTT 3.1.1, 3.8.4); the broker does send its retained messages again.
     */
    public resumed(sessionPresent: boolean): void {
        const attached = this._attached;
        if (!attached) return;
        for (const entry of this.entries()) {
            if (sessionPresent) entry.resumed();
            else entry.lost();
            void attached.sync.sync(entry);
        }
    }

    private checkAttached(): NonNullable<MqttSubscriptions['_attached']> {
        if (!this._attached) throw closedError(NO_CID);
        return this._attached;
    }

    /** All filter entries, including those only waiting for their UNSUBSCRIBE. */
    public entries(): MqttFilterEntry[] {
        return [...this._entries.values()];
    }

    /** All listener subscriptions. */
    public list(): MqttSubscription[] {
        const result: MqttSubscription[] = [];
        for (const entry of this._entries.values()) {
            for (const r of entry.registrations.values()) result.push(r.subscription);
        }
        return result;
    }

    /**
     * True when other listeners of the filter subscribed with other MQTT 5 subscribe options (nl,
     * rap, rh, properties): the broker holds one subscription per filter, with one set of them.
     */
    private optionsConflict(parsed: ParsedFilter, options: IClientSubscribeOptions, listener: IMqttMessageListener): boolean {
        const entry = this._entries.get(parsed.brokerFilter);
        if (!entry) return false;
        const wanted = mqtt5Options(options);
        for (const [other, registration] of entry.registrations) {
            if (other !== listener && mqtt5Options(registration.subscription.options) !== wanted) return true;
        }
        return false;
    }

    /**
     * Adds a listener to a filter.
     * @returns the entry, the listener's registration, and whether it was added now.
     */
    private add(parsed: ParsedFilter, options: IClientSubscribeOptions, listener: IMqttMessageListener):
        { entry: MqttFilterEntry; registration: MqttRegistration; added: boolean } {
        let entry = this._entries.get(parsed.brokerFilter);
        if (!entry) {
            entry = new MqttFilterEntry(parsed);
            this._entries.set(parsed.brokerFilter, entry);
        }
        const existing = entry.registrations.get(listener);
        if (existing) return { entry, registration: existing, added: false };
        // Object.assign, not a spread: V8 gives a frozen spread copy a hidden class of its own, 120
        // bytes more per subscription (bench scenario 3).
        const subscription = new MqttSubscription(parsed.brokerFilter, parsed.matchFilter, Object.freeze(Object.assign({}, options)), listener);
        const registration: MqttRegistration = { subscription, route: this._router.add(parsed.matchFilter, listener), confirmed: false };
        entry.registrations.set(listener, registration);
        entry.changed();
        return { entry, registration, added: true };
    }

    /** Removes one registration (only if it is still the listener's current one). */
    private removeRegistration(entry: MqttFilterEntry, registration: MqttRegistration): void {
        const listener = registration.subscription.listener;
        if (entry.registrations.get(listener) !== registration) return;
        this._router.remove(registration.route);
        entry.registrations.delete(listener);
        entry.changed();
    }

    /** Removes a listener from a filter; returns the entry, or undefined when the pair is unknown. */
    private remove(topic: string, listener: IMqttMessageListener): MqttFilterEntry | undefined {
        const entry = this._entries.get(topic);
        const registration = entry?.registrations.get(listener);
        if (!entry || !registration) return undefined;
        this.removeRegistration(entry, registration);
        entry.settleCovered();
        return entry;
    }

    /** Forgets an entry that has no listeners and no broker subscription. */
    private dropIfIdle(entry: MqttFilterEntry): void {
        const topic = entry.parsed.brokerFilter;
        if (entry.registrations.size === 0 && entry.brokerQos === null && entry.syncing === null && this._entries.get(topic) === entry) {
            this._entries.delete(topic);
        }
    }

    /** Removes everything. */
    private clear(): void {
        for (const entry of this._entries.values()) {
            for (const r of entry.registrations.values()) this._router.remove(r.route);
        }
        this._entries.clear();
    }

    /** The distinct listeners whose filters match an incoming topic name. */
    public match(topic: string): readonly IMqttMessageListener[] {
        return this._router.match(topic);
    }
}


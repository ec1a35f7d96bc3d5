import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes' with { 'resolution-mode': 'import' };

type QoS = PublishPacket['qos'];

const SHARE_PREFIX = '$share/';

/** The two parts of a shared subscription filter `$share/<group>/<filter>`. */
export type SharedFilter = { group: string; filter: string };

/**
 * Splits `$share/<group>/<filter>`; undefined when `topic` is not a well-formed shared filter
 * (no `$share/` prefix, an empty group or one with a wildcard, or an empty filter).
 */
export function parseSharedFilter(topic: string): SharedFilter | undefined {
    if (!topic.startsWith(SHARE_PREFIX)) return undefined;
    const slash = topic.indexOf('/', SHARE_PREFIX.length);
    if (slash < 0) return undefined;
    const group = topic.slice(SHARE_PREFIX.length, slash);
    const filter = topic.slice(slash + 1);
    if (group === '' || group.includes('+') || group.includes('#') || filter === '') return undefined;
    return { group, filter };
}

/**
 * Aedes' own record of a client's subscriptions (undocumented; restored persistent ones included).
 * Read only when a persistent session comes back, since Aedes emits no 'subscribe' event for those.
 */
interface AedesClientSubscriptions {
    readonly subscriptions?: Readonly<Record<string, { readonly qos: number } | undefined>>;
}

function isQoS(qos: number): qos is QoS {
    return qos === 0 || qos === 1 || qos === 2;
}

/** A client in a share group and the QoS its SUBSCRIBE was granted. */
interface Member {
    readonly client: Client;
    qos: QoS;
}

/** One share group on one filter: its members and the broker-level subscription that feeds them. */
class ShareGroup {
    private readonly members: Member[] = [];
    private next = 0;

    /** The listener registered with `aedes.subscribe(filter, ...)`: hands each message to one member. */
    public readonly deliver: (packet: AedesPublishPacket, done: () => void) => void;

    public constructor(public readonly filter: string) {
        // [MQTT-4.7.2-1] A filter starting with a wildcard does not match topics starting with '$'.
        const skipsDollarTopics = filter.startsWith('+') || filter.startsWith('#');
        this.deliver = (packet, done) => {
            const member = skipsDollarTopics && packet.topic.startsWith('$') ? undefined : this.pick();
            if (!member) {
                done();
                return;
            }
            // A copy, as Aedes makes one per subscription: it keeps brokerId/brokerCounter (Aedes'
            // per-client dedupe) and clears retain, as for any established subscription. Client.publish
            // stores QoS > 0 for a persistent session before writing, as Aedes' own delivery does.
            const qos = member.qos < packet.qos ? member.qos : packet.qos;
            member.client.publish({ ...packet, qos, retain: false }, () => done());
        };
    }

    public get size(): number {
        return this.members.length;
    }

    /** Adds `client`, or updates its granted QoS when it subscribes again. */
    public add(client: Client, qos: QoS): void {
        const member = this.members.find((m) => m.client === client);
        if (member) {
            member.qos = qos;
        } else {
            this.members.push({ client, qos });
        }
    }

    /** Removes `client`; false when it was not a member. */
    public remove(client: Client): boolean {
        const index = this.members.findIndex((m) => m.client === client);
        if (index < 0) return false;
        this.members.splice(index, 1);
        if (index < this.next) this.next--;
        return true;
    }

    /** The next member in round robin order, skipping clients that are closing. */
    private pick(): Member | undefined {
        for (let tried = 0; tried < this.members.length; tried++) {
            const member = this.members[this.next % this.members.length];
            this.next = (this.next + 1) % this.members.length;
            if (!member.client.closed) return member;
        }
        return undefined;
    }
}

/**
 * MQTT shared subscriptions (`$share/<group>/<filter>`) for an Aedes broker, which otherwise
 * treats such a filter literally and delivers nothing to it.
 *
 * The literal `$share/...` subscription stays in Aedes, which thus still answers SUBACK and
 * UNSUBACK and drops it on disconnect; Aedes' 'subscribe', 'unsubscribe', 'clientDisconnect' and
 * 'clientReady' events tell which clients are in which group. For each group and filter with at
 * least one member there is one broker-level subscription on the filter itself, which passes every
 * matching message to exactly one connected member, round robin, at the lower of the message's QoS
 * and the member's granted QoS.
 *
 * Limits: messages go only to connected members (nothing is queued for a group whose members are
 * all offline); a client whose other subscriptions also match a message gets one copy, since Aedes
 * drops a second delivery of the same message to the same client; MQTT 5 options do not apply
 * (Aedes 1.x speaks MQTT 3.1 and 3.1.1 only).
 *
 * The broker must also be created with {@link SharedSubscriptions.acceptsFilter} in its
 * `authorizeSubscribe` and {@link SharedSubscriptions.forwards} in its `authorizeForward`.
 */
export class SharedSubscriptions {
    /** Groups by their full shared filter, `$share/<group>/<filter>`. */
    private readonly groups = new Map<string, ShareGroup>();

    private constructor(private readonly aedes: Aedes) {}

    /** Adds shared subscriptions to `aedes` (call once, right after creating it). */
    public static attach(aedes: Aedes): SharedSubscriptions {
        const shares = new SharedSubscriptions(aedes);
        // Granted QoS 128 means refused; Aedes then keeps any earlier subscription, and so do we.
        aedes.on('subscribe', (subs: Subscription[], client: Client) => {
            for (const sub of subs) {
                if (isQoS(sub.qos)) shares.join(sub.topic, client, sub.qos);
            }
        });
        aedes.on('unsubscribe', (topics: string[], client: Client) => {
            for (const topic of topics) shares.leave(topic, client);
        });
        aedes.on('clientDisconnect', (client: Client) => {
            for (const topic of [...shares.groups.keys()]) shares.leave(topic, client);
        });
        // A returning persistent session gets its subscriptions back without a 'subscribe' event.
        aedes.on('clientReady', (client: Client) => {
            if (client.clean) return;
            const restored = (client as Client & AedesClientSubscriptions).subscriptions ?? {};
            for (const [topic, sub] of Object.entries(restored)) {
                if (sub && isQoS(sub.qos)) shares.join(topic, client, sub.qos);
            }
        });
        return shares;
    }

    /**
     * For `authorizeSubscribe`: false for a filter that starts with `$share/` but is malformed
     * (see {@link parseSharedFilter}), which is then refused with SUBACK 0x80.
     */
    public static acceptsFilter(topic: string): boolean {
        return !topic.startsWith(SHARE_PREFIX) || parseSharedFilter(topic) !== undefined;
    }

    /**
     * For `authorizeForward`: false for a message whose topic name starts with `$share/`. Only the
     * literal `$share/...` subscriptions kept in Aedes (or a shared filter like `$share/g/$share/#`)
     * could match such a name, as a filter starting with a wildcard never matches a `$` topic; this
     * keeps the literal ones from ever delivering anything, retained messages included.
     */
    public static forwards(topic: string): boolean {
        return !topic.startsWith(SHARE_PREFIX);
    }

    /**
     * Adds `client` to the group of shared filter `topic` (ignored when it is not one). A client
     * already closing is left out: its 'subscribe' event can come after its 'clientDisconnect'.
     */
    private join(topic: string, client: Client, qos: QoS): void {
        const shared = parseSharedFilter(topic);
        if (!shared || client.closed) return;
        let group = this.groups.get(topic);
        if (!group) {
            group = new ShareGroup(shared.filter);
            this.groups.set(topic, group);
            // mqemitter adds the listener at once, so no message slips past a new group.
            this.aedes.subscribe(shared.filter, group.deliver, () => undefined);
        }
        group.add(client, qos);
    }

    /**
     * Removes `client` from the group of `topic`; the last member out ends the group. mqemitter
     * drops the listener a tick later; until then it finds no member and delivers nothing, while a
     * group started anew on the same filter has a listener of its own.
     */
    private leave(topic: string, client: Client): void {
        const group = this.groups.get(topic);
        if (!group?.remove(client) || group.size > 0) return;
        this.groups.delete(topic);
        this.aedes.unsubscribe(group.filter, group.deliver, () => undefined);
    }
}

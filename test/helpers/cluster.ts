// What every clustered broker of the cluster suites (test/clusters) offers: nodes on free
// 127.0.0.1 ports that can be stopped, killed and started again on the same ports and data, and
// what the cluster promises about sessions. Each cluster has its own helper (natsCluster.ts,
// rabbitmqCluster.ts, aedesCluster.ts, ejabberdCluster.ts) that returns a TestCluster.
import { brokerRequired } from './brokerProcess';

/** The clusters the suites run on. */
export type ClusterKind = 'nats' | 'rabbitmq' | 'aedes-redis' | 'ejabberd';

/** One node of a cluster. */
export interface ClusterNode {
    /** For messages: `nats-1`, `rabbitmq-2`. */
    readonly name: string;
    /** The node's MQTT listener: `mqtt://127.0.0.1:<port>` (with a user name and password where the broker needs them), the same across restarts. */
    readonly url: string;
    /** Starts the node again on its ports and data; resolves once it answers an MQTT CONNECT. Idempotent. */
    start(): Promise<void>;
    /** A graceful stop; resolves once the process is gone. Idempotent. */
    stop(): Promise<void>;
    /** Sends `signal` (default SIGKILL) and resolves once the process is gone. */
    kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A running cluster. */
export interface TestCluster {
    readonly kind: ClusterKind;
    readonly nodes: readonly ClusterNode[];
    /**
     * Whether a persistent session (clean session off, QoS 1 subscriptions and their queued
     * messages) survives the loss of the node it lives on. Where it does not, the suites check that
     * the module notices the missing session and resubscribes.
     */
    readonly keepsSessions: boolean;
    /**
     * Why this broker may lose QoS 1 messages it acknowledged to a publisher whose node goes away
     * (stops or dies) at that moment, where it does: Aedes sends PUBACK before it stores or forwards
     * the message; NATS 2.9 loses some it stored while the node shuts down. The suites then allow a
     * loss only of numbers in flight when the publisher's node went away, only when they never
     * reached the subscriber's client, and report them as lost by the broker.
     */
    readonly losesAtPublisherLoss?: string;
    /** The settings that make the cluster behave as the suites expect, for docs/clusters.md. */
    readonly settings: string;
    /** Stops every node and removes every folder. */
    stop(): Promise<void>;
}

/**
 * True when env REQUIRE_CLUSTERS is `all` or names `kind` (comma or space separated), or when
 * REQUIRE_BROKERS is `all`: then a missing binary fails the suite instead of skipping it.
 */
export function clusterRequired(kind: ClusterKind): boolean {
    const required = (process.env.REQUIRE_CLUSTERS ?? '').toLowerCase().split(/[\s,]+/);
    return required.includes('all') || required.includes(kind) || brokerRequired('all');
}

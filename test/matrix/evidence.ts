// What a matrix test saw when a broker lacks a feature, for the matrix's "not supported by broker" cells.
import { appendFileSync } from 'node:fs';

import type { Feature, MatrixBroker } from './matrixBrokers';

/** One line of the evidence file (`MATRIX_EVIDENCE`, JSON lines), read by scripts/test-brokers.mjs. */
export interface EvidenceRecord {
    broker: MatrixBroker['id'];
    feature: Feature;
    evidence: string;
    /** `unsupported`: the broker lacks the feature; `deviation`: it has it, and departs from MQTT somewhere. */
    kind: 'unsupported' | 'deviation';
}

/**
 * Records that the broker lacks the feature, with what showed it (an error message, a packet).
 * The cell then reads "not supported by broker" when its tests pass, and "fail" when they do not.
 */
export function recordUnsupported(broker: MatrixBroker, feature: Feature, evidence: string): void {
    record({ broker: broker.id, feature, evidence, kind: 'unsupported' });
}

/**
 * Records a known departure from MQTT that a test checked (so that it fails when the broker
 * changes): the cell then reads "pass, broker deviates" with this evidence.
 */
export function recordDeviation(broker: MatrixBroker, feature: Feature, evidence: string): void {
    record({ broker: broker.id, feature, evidence, kind: 'deviation' });
}

function record(entry: EvidenceRecord): void {
    const file = process.env.MATRIX_EVIDENCE;
    if (!file) return;
    appendFileSync(file, `${JSON.stringify(entry)}\n`);
}

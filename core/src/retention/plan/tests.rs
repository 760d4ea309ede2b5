use super::*;

fn at(timeline: u32, seg: u32) -> WalSegment {
    WalSegment { timeline: Timeline(timeline), position: SegmentPosition { log: 0, seg } }
}

fn survey(anchors: &[WalSegment]) -> WalSurvey {
    WalSurvey {
        anchors: anchors.iter().map(|&segment| Anchor { segment, lsn: None }).collect(),
        ancestors: BTreeMap::new(),
        seen: BTreeSet::new(),
        rule: WalRule::default(),
        ranges: BTreeMap::new(),
    }
}

fn observe(survey: &mut WalSurvey, timeline: u32, segs: std::ops::RangeInclusive<u32>) {
    for seg in segs {
        survey.observe(StoredWal::Segment { segment: at(timeline, seg), kind: naming::WalFileKind::Segment }, 1);
    }
}

fn going(ranges: &[WalRange]) -> Vec<(u32, u32, u32)> {
    ranges.iter().map(|r| (r.timeline.0, r.first.position.seg, r.last.position.seg)).collect()
}

/// Timeline 1 has no kept backup; 2 (from 1 at 0x10) keeps one at 0x20; 3 (a branch
/// from 1 at 0x08, say a restore test) keeps one at 0x09; 4, whose history names no
/// parent, one at 0x15.
#[test]
fn each_timeline_keeps_from_the_oldest_kept_backup_on_its_lineage() {
    let mut survey = survey(&[at(2, 0x20), at(3, 0x09), at(4, 0x15)]);
    assert!(survey.needs_history(Timeline(2)) && !survey.needs_history(Timeline(1)));
    survey.learn_history(Timeline(2), vec![(Timeline(1), Lsn(0x10 << 24))]);
    survey.learn_history(Timeline(3), vec![(Timeline(1), Lsn(0x08 << 24))]);
    survey.learn_history(Timeline(4), vec![]);
    observe(&mut survey, 1, 1..=0x10);
    observe(&mut survey, 2, 0x10..=0x24);
    observe(&mut survey, 3, 0x08..=0x0C);
    observe(&mut survey, 4, 0x05..=0x16);
    let (rule, ranges) = survey.finish();
    assert_eq!(
        going(&ranges),
        [
            // No kept backup on its lineage: before the oldest kept anywhere.
            (1, 1, 8),
            // Its own backup at 0x20 is the oldest on 2 and 1.
            (2, 0x10, 0x1F),
            (3, 0x08, 0x08),
            // Unknown ancestry (a history naming no parent tells nothing): not from
            // its own backup at 0x15, from the oldest kept anywhere.
            (4, 0x05, 0x08),
        ]
    );
    assert!(!rule.deletes(StoredWal::History(Timeline(2))));
    assert!(rule.deletes(StoredWal::Segment { segment: at(2, 0x1F), kind: naming::WalFileKind::Partial }));
    assert!(!rule.deletes(StoredWal::Segment { segment: at(2, 0x20), kind: naming::WalFileKind::Segment }));
    assert!(
        !rule.deletes(StoredWal::Segment { segment: at(5, 0x01), kind: naming::WalFileKind::Segment }),
        "a timeline the plan never saw"
    );
}

/// A store listing a timeline's segments before its history file: the timeline's
/// cutoff is fixed at its first segment, the careful one, and stays consistent.
#[test]
fn segments_seen_before_their_history_get_the_careful_cutoff() {
    let mut survey = survey(&[at(2, 0x20), at(3, 0x09)]);
    observe(&mut survey, 2, 0x10..=0x12);
    assert!(!survey.needs_history(Timeline(2)), "the cutoff is fixed");
    observe(&mut survey, 2, 0x13..=0x24);
    let (_, ranges) = survey.finish();
    assert!(going(&ranges).is_empty(), "{ranges:?}");
}

#[test]
fn no_wal_goes_without_a_backup_restorable_from_its_begin() {
    let mut survey = survey(&[]);
    assert!(!survey.may_delete());
    observe(&mut survey, 1, 1..=5);
    assert!(survey.finish().0.deletes_nothing());
}

#[test]
fn standalone_ranges_stay_inside_what_goes() {
    let mut survey = survey(&[at(1, 0x10)]);
    survey.rule.protected.push((at(1, 3), at(1, 4)));
    observe(&mut survey, 1, 1..=0x10);
    let (rule, ranges) = survey.finish();
    assert_eq!(going(&ranges), [(1, 1, 0x0F)]);
    assert_eq!(ranges[0].objects, 0x0F - 2);
    assert!(!rule.deletes(StoredWal::Segment { segment: at(1, 3), kind: naming::WalFileKind::BackupHistory }));
}

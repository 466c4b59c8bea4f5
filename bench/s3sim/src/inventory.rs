//! An S3 Inventory report (CSV) of a bucket, as S3 delivers one into a destination bucket:
//! `SOURCE/CONFIG/YYYY-MM-DDTHH-MMZ/manifest.json` and `manifest.checksum`, and the rows in
//! `SOURCE/CONFIG/data/UUID.csv.gz`. Built once at startup, held in memory.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};

use crate::data::{Bucket, Stored};
use crate::enc;

pub struct Options {
    pub config_id: String,
    /// `YYYY-MM-DDTHH-MMZ`, the report's folder and creation time.
    pub date: String,
    pub rows_per_file: u64,
    pub threads: usize,
}

fn parse_date(s: &str) -> Result<i64, String> {
    let bad = || format!("inventory date {s}: want YYYY-MM-DDTHH-MMZ");
    let b = s.as_bytes();
    if b.len() != 17
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b'-'
        || b[16] != b'Z'
    {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| bad());
    let days = enc::days_from_civil(i64::from(n(0..4)?), n(5..7)?, n(8..10)?);
    Ok(days * 86_400 + i64::from(n(11..13)?) * 3600 + i64::from(n(14..16)?) * 60)
}

/// A version-4-shaped UUID that depends only on the report and the file's number.
fn uuid(seed: &str, n: u64) -> String {
    let h = Md5::digest(format!("{seed}/{n}").as_bytes());
    let mut b: [u8; 16] = h.into();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = enc::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// One data file: rows `from..to` of `src`, gzip CSV with every field quoted.
fn data_file(src: &Bucket, from: u64, to: u64) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    let mut line = String::with_capacity(256);
    for pos in from..to {
        let m = src.meta(pos);
        line.clear();
        line.push_str(&format!(
            "\"{}\",\"{}\",\"{}\",\"{}\",\"{}\",\"STANDARD\"\n",
            src.name,
            enc::url_key(&m.key),
            m.size,
            enc::iso8601(m.modified),
            enc::hex(&m.md5)
        ));
        gz.write_all(line.as_bytes()).expect("writing to memory");
    }
    gz.finish().expect("writing to memory")
}

/// The objects of the report of `src`, to be served from the destination bucket `dest`.
pub fn report(src: &Bucket, dest: &str, o: &Options) -> Result<Vec<Stored>, String> {
    let created = parse_date(&o.date)?;
    let rows = o.rows_per_file.max(1);
    let nfiles = src.len().div_ceil(rows).max(1);
    let files: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; nfiles as usize]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..o.threads.max(1) {
            s.spawn(|| {
                loop {
                    let f = next.fetch_add(1, Ordering::Relaxed);
                    if f as u64 >= nfiles {
                        break;
                    }
                    let from = f as u64 * rows;
                    let gz = data_file(src, from, (from + rows).min(src.len()));
                    files.lock().unwrap()[f] = Some(gz);
                }
            });
        }
    });
    let base = format!("{}/{}", src.name, o.config_id);
    let mut objects = Vec::new();
    let mut listed = Vec::new();
    for (n, gz) in files.into_inner().unwrap().into_iter().enumerate() {
        let gz = gz.expect("every file was built");
        let key = format!("{base}/data/{}.csv.gz", uuid(&base, n as u64));
        let obj = Stored::new(key, Bytes::from(gz), created);
        listed.push(format!(
            "{{\"key\" : \"{}\", \"size\" : {}, \"MD5checksum\" : \"{}\"}}",
            obj.key,
            obj.body.len(),
            enc::hex(&obj.md5)
        ));
        objects.push(obj);
    }
    let manifest = format!(
        "{{\n  \"sourceBucket\" : \"{}\",\n  \"destinationBucket\" : \"arn:aws:s3:::{dest}\",\n  \"version\" : \"2016-11-30\",\n  \"creationTimestamp\" : \"{}\",\n  \"fileFormat\" : \"CSV\",\n  \"fileSchema\" : \"Bucket, Key, Size, LastModifiedDate, ETag, StorageClass\",\n  \"files\" : [ {} ]\n}}\n",
        src.name,
        created * 1000,
        listed.join(", ")
    );
    let checksum = enc::hex(&Md5::digest(manifest.as_bytes()));
    let folder = format!("{base}/{}", o.date);
    objects.push(Stored::new(
        format!("{folder}/manifest.json"),
        Bytes::from(manifest),
        created,
    ));
    objects.push(Stored::new(
        format!("{folder}/manifest.checksum"),
        Bytes::from(checksum),
        created,
    ));
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::data::{KeySet, odd_objects};

    #[test]
    fn report_lists_every_key_encoded_in_files_the_manifest_names() {
        let mut src = Bucket::new("src");
        src.add_set(KeySet::parse("5:1K:0:k{i:1}").unwrap());
        src.add_stored(odd_objects("odd/"));
        src.seal().unwrap();
        let o = Options {
            config_id: "daily".into(),
            date: "2026-12-01T00-00Z".into(),
            rows_per_file: 4,
            threads: 2,
        };
        let objs = report(&src, "inv", &o).unwrap();
        let manifest = objs
            .iter()
            .find(|o| o.key.ends_with("manifest.json"))
            .unwrap();
        assert_eq!(manifest.key, "src/daily/2026-12-01T00-00Z/manifest.json");
        let text = std::str::from_utf8(&manifest.body).unwrap();
        assert!(
            text.contains("\"creationTimestamp\" : \"1796083200000\""),
            "{text}"
        );
        assert!(text.contains("\"destinationBucket\" : \"arn:aws:s3:::inv\""));
        let data: Vec<&Stored> = objs.iter().filter(|o| o.key.contains("/data/")).collect();
        assert_eq!(data.len(), 4); // 16 rows, 4 a file
        let mut rows = String::new();
        for d in &data {
            assert!(text.contains(&format!("\"key\" : \"{}\"", d.key)));
            assert!(text.contains(&enc::hex(&d.md5)));
            flate2::read::GzDecoder::new(&d.body[..])
                .read_to_string(&mut rows)
                .unwrap();
        }
        assert_eq!(rows.lines().count(), 16);
        assert!(rows.contains("\"src\",\"odd/with+space.txt\",\""));
        assert!(rows.contains("\"src\",\"odd/plus%2Bsign.txt\",\""));
        let k0 = src.find("k0").unwrap();
        assert!(rows.contains(&format!(
            "\"src\",\"k0\",\"1024\",\"{}\",\"{}\",\"STANDARD\"",
            enc::iso8601(src.modified(k0)),
            enc::hex(&src.md5(k0))
        )));
        let sum = objs
            .iter()
            .find(|o| o.key.ends_with("manifest.checksum"))
            .unwrap();
        assert_eq!(&sum.body[..], enc::hex(&manifest.md5).as_bytes());
    }
}

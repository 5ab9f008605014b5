//! `kubelab image list|pull|rm|export|import|bake`: the image catalogue and cache.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use super::progress::CliProgress;
use super::{Ctx, OutputFormat};
use crate::image::catalog::{Digest, Format};
use crate::image::{ImageRequest, ImageSource};
use crate::ops;

/// Arguments of `kubelab image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// List the catalogue, what is cached, and other cached images.
    List,
    /// Download and verify an image into the cache.
    Pull(PullArgs),
    /// Remove a cached image (by catalogue name or SHA-256).
    Rm {
        /// A catalogue name, or a SHA-256 (at least its first 12 hex characters).
        target: String,
    },
    /// Write a cached image and its manifest to one archive file, for another host.
    Export {
        /// The archive to write (replaced if it exists).
        file: PathBuf,
        /// A catalogue name, or a SHA-256 (at least its first 12 hex characters).
        ///
        /// Default: the image `kubelab up` uses by default.
        image: Option<String>,
    },
    /// Verify an archive written by `image export` and add its image to the cache.
    Import {
        /// The archive to read.
        file: PathBuf,
    },
    /// Make a golden node image: boot the base image once, install Kubernetes' node
    /// prerequisites and pull its images, clean it for cloning and store its disk in the
    /// cache. `kubelab up` then boots it for clusters of that version made from that base
    /// (or with `--image baked:VERSION`), installing and pulling nothing.
    Bake(BakeArgs),
}

#[derive(Debug, Args)]
struct BakeArgs {
    /// The base image: a catalogue name, a URL or a path (default: ubuntu-24.04).
    #[arg(long, value_name = "NAME|URL|PATH")]
    from: Option<String>,

    /// SHA-256 of the --from file.
    #[arg(long, value_name = "HEX")]
    from_sha256: Option<String>,

    /// Accept an http(s) --from URL without a digest.
    #[arg(long)]
    insecure_skip_verify: bool,

    /// Kubernetes version to bake in (vMAJOR.MINOR.PATCH; default v1.34.2).
    #[arg(long, value_name = "VERSION")]
    kubernetes_version: Option<String>,

    /// Kubernetes package repository (as for `kubelab up`).
    #[arg(long, value_name = "URL")]
    kubernetes_repo: Option<String>,

    /// A registry mirror the bake pulls the container images through (written as the
    /// first host of each registry in containerd's certs.d, removed before the disk is
    /// stored), e.g. http://10.0.0.1:5000.
    #[arg(long, value_name = "URL")]
    registry_mirror: Option<String>,

    /// The hypervisor backend that bakes (and whose disk format the image gets).
    #[arg(long, value_name = "NAME")]
    driver: Option<String>,

    /// libvirt connection URI.
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,

    /// Seconds to wait for the bake VM to answer SSH.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    ssh_timeout: u64,
}

#[derive(Debug, Args)]
struct PullArgs {
    /// A catalogue name (`kubelab image list`), an http(s):// or file:// URL, or a path.
    image: String,

    /// The expected SHA-256 of the file (hex, optionally prefixed `sha256:`).
    ///
    /// Required for http(s) URLs unless --insecure-skip-verify is given; overrides
    /// the catalogue's digest for names.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,

    /// The format to pull.
    ///
    /// Default: qcow2 for catalogue names (iso for ISO entries); for URLs and paths,
    /// what the file extension says, else qcow2.
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Accept an http(s) URL without a digest (the file is stored unverified).
    #[arg(long)]
    insecure_skip_verify: bool,

    /// The largest image accepted, for URLs and paths (plain GiB, or 512m, 100g, 1t).
    ///
    /// Default: 64g. A catalogue image is bounded by its published size instead. The
    /// bound is checked against the announced size before reading and while streaming.
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
}

/// Runs `kubelab image ...`.
pub fn exec(ctx: &Ctx, args: ImageArgs) -> Result<(), crate::Error> {
    match args.command {
        ImageCommand::List => list(ctx),
        ImageCommand::Pull(args) => pull(ctx, args),
        ImageCommand::Rm { target } => {
            let removed = ops::image::remove(&ctx.home, &target)?;
            if ctx.output == OutputFormat::Json {
                return ctx.print_json(&removed);
            }
            let mut out = std::io::stdout().lock();
            for image in &removed {
                writeln!(out, "removed {}", image.path.display()).map_err(crate::Error::Output)?;
            }
            Ok(())
        }
        ImageCommand::Export { file, image } => {
            let exported =
                ops::image::export(&ctx.home, &file, image.as_deref(), &CliProgress::new())?;
            if ctx.output == OutputFormat::Json {
                return ctx.print_json(&exported);
            }
            let image = &exported.image;
            writeln!(std::io::stdout(), "{}  sha256:{}", exported.archive.display(), image.sha256)
                .map_err(crate::Error::Output)
        }
        ImageCommand::Bake(args) => bake(ctx, args),
        ImageCommand::Import { file } => {
            let imported = ops::image::import(&ctx.home, &file, &CliProgress::new())?;
            if ctx.output == OutputFormat::Json {
                return ctx.print_json(&imported);
            }
            let image = &imported.image;
            writeln!(std::io::stdout(), "{}  sha256:{}", image.path.display(), image.sha256)
                .map_err(crate::Error::Output)
        }
    }
}

fn pull(ctx: &Ctx, args: PullArgs) -> Result<(), crate::Error> {
    let req = ImageRequest {
        source: ImageSource::parse(&args.image)?,
        format: args.format,
        sha256: args.sha256.map(|hex| hex.parse::<Digest>()).transpose()?,
        insecure_skip_verify: args.insecure_skip_verify,
        max_size_bytes: match args.max_size {
            Some(text) => crate::cluster::parse_max_size_bytes(&text)?,
            None => crate::image::DEFAULT_MAX_SIZE_BYTES,
        },
    };
    let image = ops::image::pull(&ctx.home, &req, &CliProgress::new())?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&image);
    }
    writeln!(std::io::stdout(), "{}  sha256:{}", image.path.display(), image.sha256)
        .map_err(crate::Error::Output)
}

fn bake(ctx: &Ctx, args: BakeArgs) -> Result<(), crate::Error> {
    let opts = ops::bake::BakeOptions {
        from: args.from,
        from_sha256: args.from_sha256,
        insecure_skip_verify: args.insecure_skip_verify,
        kubernetes_version: args.kubernetes_version,
        kubernetes_repo: args.kubernetes_repo,
        registry_mirror: args.registry_mirror,
        driver: args.driver.as_deref().map(str::parse).transpose()?,
        libvirt_uri: args.libvirt_uri,
        ssh_timeout: std::time::Duration::from_secs(args.ssh_timeout),
    };
    let report = ops::bake::bake(&ctx.home, &opts, &CliProgress::new())?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&report);
    }
    let (image, baked) = (&report.image.image, &report.image.baked);
    writeln!(
        std::io::stdout(),
        "baked {} in {:.0} s: {} ({}, sha256:{}) from {}, {} packages, {} images",
        baked.image_name(),
        report.secs,
        image.path.display(),
        HumanBytes(image.size_bytes),
        image.sha256,
        baked.base.source,
        baked.packages.len(),
        baked.images.len()
    )
    .map_err(crate::Error::Output)
}

fn list(ctx: &Ctx) -> Result<(), crate::Error> {
    let images = ops::image::list(&ctx.home)?;
    if ctx.output == OutputFormat::Json {
        return ctx.print_json(&images);
    }
    let mut out = std::io::stdout().lock();
    let mut row = |name: &str, kind: &str, format: &str, size: &str, cached: &str| {
        writeln!(out, "{name:<16} {kind:<5} {format:<6} {size:>11}  {cached}")
            .map_err(crate::Error::Output)
    };
    let size = |s: Option<u64>| s.map_or_else(|| "-".to_owned(), |s| HumanBytes(s).to_string());
    row("NAME", "KIND", "FORMAT", "SIZE", "CACHED")?;
    for entry in &images.catalog {
        for f in &entry.formats {
            let cached = if f.cached.is_some() { "yes" } else { "no" };
            row(&entry.name, entry.kind.as_str(), f.format.as_str(), &size(f.size_bytes), cached)?;
        }
    }
    for b in &images.baked {
        let about = format!(
            "baked {} from {} ({} images, sha256:{})",
            b.baked.baked_at,
            b.baked.base.source,
            b.baked.images.len(),
            &b.image.sha256[..12]
        );
        let name = b.baked.image_name();
        row(&name, "disk", b.image.format.as_str(), &size(Some(b.image.size_bytes)), &about)?;
    }
    for image in &images.other {
        let origin = match &image.converted_from {
            Some(sha256) => format!("converted from {}", &sha256[..12]),
            None => image.url.clone(),
        };
        row("-", "disk", image.format.as_str(), &size(Some(image.size_bytes)), &origin)?;
    }
    Ok(())
}
